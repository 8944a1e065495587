"""The MCP server behind /v1/servers/{id}/mcp, built on the SDK's low-level `Server`.

Lists (`tools/list`, `resources/list`, `resources/templates/list`, `prompts/list`) are served
from the catalog in a short read session, a page at a time, and never touch a backend; items
carry what their backend declared, as the client's protocol revision defines it
(api/mcp/catalog.py). `tools/call`, `resources/read`, `prompts/get` and `completion/complete`
resolve the item in a short read session, close it, enqueue a job and await it by push: no DB
connection is held while a backend works. What the backend sends during the call is relayed on
the call's own stream, in order, before the result: progress when the client sent a
`progressToken` (under that token), and log entries at or above the client's level
(`logging/setLevel`, remembered per session; on 2026-07-28 the request's
`io.modelcontextprotocol/logLevel`). A client's `notifications/cancelled` interrupts the
handler, which cancels the job. `initialize` and `server/discover` advertise the capabilities of
the server's backends that the front door serves (catalog.capabilities). Resource subscriptions,
list changes and `subscriptions/listen` are in api/mcp/subscriptions.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import mcp_types as types
from mcp import MCPError
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.models import InitializationOptions
from mcp_types import INVALID_PARAMS, INVALID_REQUEST, LOG_LEVEL_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from api.mcp import catalog, interactive
from api.mcp.subscriptions import Pushes
from api.mcp.tasks import TaskAwareServer, Tasks, background_tasks
from api.mcp.wire import caller_of, completed_or_raise, protocol_error, session_of, tool_error, tool_result
from api.tracing import mcp_call_span
from shared.auth.schemas import Principal
from shared.context import AppContext
from shared.errors import BadRequest, InvalidArguments, MCPQError
from shared.items import service as items
from shared.items.kind import CompletionRequest, ItemKind, Request
from shared.jobs.interactive import Until, asking_beyond
from shared.jobs.queue import EventSink, InputSink
from shared.jobs.schemas import LOG_LEVELS, JobEvent, JobRecord, PreparedJob
from shared.prompts.kind import PROMPTS
from shared.resources.kind import RESOURCES
from shared.servers import service as server_service
from shared.subscriptions import SubscriptionStore
from shared.tools.kind import TOOLS

RESOURCE_NOT_FOUND = -32002
# How much longer than the backend's own timeout (plus the queue wait) a handler waits for a job.
WAIT_SLACK_S = 30.0


def _log_level(ctx: ServerRequestContext[Any, Any], meta: dict[str, Any]) -> str | None:
    """The least severe backend log the client wants relayed for this request: on 2026-07-28 its
    own opt-in; before, its session's `logging/setLevel` (none until it sets one)."""
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        requested = meta.get(LOG_LEVEL_META_KEY)
        return requested if requested in LOG_LEVELS else None
    session = session_of(ctx)
    return session.log_level if session is not None else None


def _relay(
    ctx: ServerRequestContext[Any, Any], wants_progress: bool, log_level: str | None
) -> EventSink | None:
    """What sends a job's events on the request's own stream: progress under the client's token
    (the session reports against the request's), log entries as the backend sent them (the worker
    kept those at or above `log_level`). None when the client asked for neither."""
    if not wants_progress and log_level is None:
        return None

    async def relay(event: JobEvent) -> None:
        if event["type"] == "progress" and wants_progress:
            await ctx.session.report_progress(
                float(event.get("progress") or 0), event.get("total"), event.get("message")
            )
        elif event["type"] == "log" and log_level is not None:
            entry = types.LoggingMessageNotificationParams(
                level=event["level"], data=event.get("data"), logger=event.get("logger")
            )
            await ctx.session.send_notification(
                types.LoggingMessageNotification(params=entry), related_request_id=ctx.request_id
            )

    return relay


def _unknown(kind: ItemKind[Any, Any, Any, Any], name: str) -> MCPError:
    """What MCP answers for an item the server does not have."""
    if kind is RESOURCES:
        return MCPError(code=RESOURCE_NOT_FOUND, message=f"Resource not found: {name}", data={"uri": name})
    return MCPError(code=INVALID_PARAMS, message=f"Unknown {kind.name}: {name}")


class FrontDoor:
    """One low-level MCP server for every virtual server: each request names its server."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.tasks = Tasks(ctx.queue, ctx.settings, self.prepare_call)
        self.pushes = Pushes(
            ctx.queue,
            SubscriptionStore(ctx.queue.redis, ctx.settings),
            self.tasks,
            self.prepare_read,
            ctx.settings.mcp_endpoint_session_idle_s,
        )
        self.server: Server[Any] = TaskAwareServer(
            "mcpq",
            version="0.1.0",
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.list_resources,
            on_list_resource_templates=self.list_resource_templates,
            on_read_resource=self.read_resource,
            on_subscribe_resource=self.pushes.subscribe,
            on_unsubscribe_resource=self.pushes.unsubscribe,
            on_subscriptions_listen=self.pushes.listen,
            on_list_prompts=self.list_prompts,
            on_get_prompt=self.get_prompt,
            on_completion=self.complete,
            lifespan=background_tasks,
        )
        # server/discover (2026-07-28) answers for the virtual server it is asked about.
        self.server.add_request_handler("server/discover", types.RequestParams, self.discover)
        # Seals and checks the `requestState` of multi-round-trip calls (api/mcp/interactive.py).
        self.server.middleware.append(interactive.boundary(ctx.settings))
        self.tasks.install(self.server, self.call_tool)
        # Added after construction: the constructor's `on_set_logging_level` warns that 2026-07-28
        # dropped it, but older clients use it.
        self.server.add_request_handler(
            "logging/setLevel", types.SetLevelRequestParams, self.set_logging_level
        )

    # --- what a server advertises ------------------------------------------------------------------

    async def capabilities(self, server_id: uuid.UUID, version: str | None) -> types.ServerCapabilities:
        """The one place a virtual server's capabilities are decided (catalog.capabilities): what
        this front door serves, where the server's backends have it."""
        served = self.server.get_capabilities(catalog.NOTIFICATIONS, protocol_version=version)
        return catalog.capabilities(served, await server_service.backend_capabilities(self.ctx, server_id))

    async def init_options(self, server_id: str) -> InitializationOptions:
        """The `initialize` result of a session of this server (the session manager asks)."""
        options = self.server.create_initialization_options(catalog.NOTIFICATIONS)
        options.capabilities = await self.capabilities(uuid.UUID(server_id), None)
        return options

    async def discover(
        self, ctx: ServerRequestContext[Any, Any], params: types.RequestParams | None
    ) -> types.DiscoverResult:
        return types.DiscoverResult(
            supported_versions=list(MODERN_PROTOCOL_VERSIONS),
            capabilities=await self.capabilities(caller_of(ctx).server.id, ctx.protocol_version),
            instructions=self.server.instructions,
        )

    # --- lists: the catalog only ----------------------------------------------------------------

    async def _items(
        self,
        ctx: ServerRequestContext[Any, Any],
        kind: ItemKind[Any, Any, Any, Any],
        params: types.PaginatedRequestParams | None,
        to_item: Callable[[Any, str], Any],
        templates: bool | None = None,
    ) -> tuple[list[Any], str | None]:
        """One page of the server's items of `kind`, as MCP items for the client's revision, and
        the next page's cursor (None: the last page)."""
        try:
            after = catalog.after(params.cursor if params is not None else None)
        except BadRequest:
            raise MCPError(code=INVALID_PARAMS, message="invalid cursor") from None
        rows, places, more = await items.page_on_server(
            self.ctx,
            kind,
            caller_of(ctx).server.id,
            after=after,
            limit=catalog.PAGE_SIZE,
            templates=templates,
        )
        return [to_item(row, ctx.protocol_version) for row in rows], catalog.next_cursor(places, more)

    async def list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        tools, cursor = await self._items(ctx, TOOLS, params, catalog.tool)
        return types.ListToolsResult(tools=tools, next_cursor=cursor)

    async def list_resources(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        found, cursor = await self._items(ctx, RESOURCES, params, catalog.resource, templates=False)
        return types.ListResourcesResult(resources=found, next_cursor=cursor)

    async def list_resource_templates(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        found, cursor = await self._items(ctx, RESOURCES, params, catalog.template, templates=True)
        return types.ListResourceTemplatesResult(resource_templates=found, next_cursor=cursor)

    async def list_prompts(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        prompts, cursor = await self._items(ctx, PROMPTS, params, catalog.prompt)
        return types.ListPromptsResult(prompts=prompts, next_cursor=cursor)

    # --- calls: prepare, then through the queue ----------------------------------------------------

    async def prepare(
        self,
        ctx: ServerRequestContext[Any, Any],
        kind: ItemKind[Any, Any, Any, Request],
        name: str,
        request: Request,
    ) -> PreparedJob:
        """The job for the server's item `name`, prepared like a REST call's (the same pipeline),
        counted; mcpq's errors become protocol errors (caused by the original)."""
        return await self._prepared(
            ctx, kind, name, lambda who, item: items.prepare(self.ctx, who, kind, item, request, name)
        )

    async def prepare_read(self, ctx: ServerRequestContext[Any, Any], uri: str) -> PreparedJob:
        """The read job of the server's resource `uri` (subscriptions start from it)."""
        return await self.prepare(ctx, RESOURCES, uri, uri)

    async def _prepared(
        self,
        ctx: ServerRequestContext[Any, Any],
        kind: ItemKind[Any, Any, Any, Any],
        name: str,
        make: Callable[[Principal, Any], PreparedJob],
    ) -> PreparedJob:
        caller = caller_of(ctx)
        try:
            with items.counted(kind, "mcp"):
                item = await items.resolve_on_server(self.ctx, kind, caller.server.id, name)
                if item is None:
                    raise _unknown(kind, name)
                return make(caller.principal, item)
        except MCPQError as exc:
            raise protocol_error(exc) from exc

    async def prepare_call(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> PreparedJob | types.CallToolResult:
        """A tools/call's job, or the tool error that tells the model its arguments are wrong."""
        try:
            return await self.prepare(ctx, TOOLS, params.name, params.arguments or {})
        except MCPError as exc:
            # Input validation errors are tool execution errors the model can correct (SEP-1303).
            if isinstance(exc.__cause__, InvalidArguments):
                return tool_error(exc.__cause__.detail)
            raise

    async def _await(
        self,
        ctx: ServerRequestContext[Any, Any],
        kind: ItemKind[Any, Any, Any, Any],
        job: PreparedJob,
        params: types.InputResponseRequestParams,
    ) -> JobRecord | types.InputRequiredResult:
        """Enqueue and await the job (pushed), relaying progress when the client asked for it and
        the backend's questions (api/mcp/interactive.py); the job is cancelled if the client
        cancels the request. No DB session is open meanwhile.

        A 2026-07-28 client gets an `InputRequiredResult` when the backend asks something, and
        its retry (same call, with `requestState`) answers and awaits the same job."""
        limit = self._limit(job)
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            again = interactive.resumed(params)
            if again is not None:
                return await self._resume(ctx, kind, *again, limit)
            record = await self._run(ctx, kind, job, limit, until=asking_beyond())
            return interactive.input_required(record) if record.asking else record

        async def ask(questions: dict[str, Any]) -> dict[str, dict[str, Any]]:
            return await interactive.ask_client(ctx, questions)

        return await self._run(ctx, kind, job, limit, on_input=ask)

    def _limit(self, job: PreparedJob) -> float:
        """How long a handler awaits a job: its queue wait, its backend's timeout, and some slack."""
        return self.ctx.settings.queue_ttl_s + job.backend_timeout_s + WAIT_SLACK_S

    async def _resume(
        self,
        ctx: ServerRequestContext[Any, Any],
        kind: ItemKind[Any, Any, Any, Any],
        job_id: str,
        answers: dict[str, dict[str, Any]],
        limit: float,
    ) -> JobRecord | types.InputRequiredResult:
        """A 2026-07-28 retry: answer the job's questions, then await it again."""
        principal = caller_of(ctx).principal
        try:
            with items.counted(kind, "mcp"):
                if answers:
                    await self.ctx.queue.answer(job_id, principal, answers)
                record = await self.ctx.queue.get(job_id, principal, limit, until=asking_beyond())
        except MCPQError as exc:
            raise protocol_error(exc) from None
        return interactive.input_required(record) if record.asking else record

    async def _run(
        self,
        ctx: ServerRequestContext[Any, Any],
        kind: ItemKind[Any, Any, Any, Any],
        job: PreparedJob,
        limit: float,
        until: Until | None = None,
        on_input: InputSink | None = None,
    ) -> JobRecord:
        """Enqueue and await the job (pushed), relaying its events when the client asked for them
        and its backend's questions (`on_input` answers them, or the wait returns at one: `until`);
        the job is cancelled if the client cancels the request. No DB session is open meanwhile."""
        started = time.perf_counter()
        meta: dict[str, Any] = dict(ctx.meta or {})
        wants_progress = meta.get("progress_token", meta.get("progressToken")) is not None
        log_level = _log_level(ctx, meta)
        relay = _relay(ctx, wants_progress, log_level)
        if relay is not None:
            # Else the worker publishes none of the job's events (nothing per call crosses Redis).
            job.payload["live_events"] = True
        if log_level is not None:
            job.payload["log_level"] = log_level  # the worker relays the backend's logs from it up
        try:
            with items.counted(kind, "mcp"):
                record = await self.ctx.queue.run(
                    job,
                    limit,
                    on_event=relay,
                    # Returning at a question (`until`, 2026-07-28) is not abandoning the job.
                    cancel_if_abandoned=True,
                    until=until,
                    on_input=on_input,
                )
        except MCPQError as exc:
            raise protocol_error(exc) from None
        items.observe(kind, "mcp", record, started)
        return record

    async def set_logging_level(
        self, ctx: ServerRequestContext[Any, Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        """Remember the level for the client's session (every API replica serving it sees it)."""
        session = session_of(ctx)
        if session is None:
            raise MCPError(code=INVALID_REQUEST, message="logging/setLevel needs an MCP session")
        await session.set_log_level(params.level)
        return types.EmptyResult()

    async def call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        with mcp_call_span(ctx, params.name):
            job = await self.prepare_call(ctx, params)
            if isinstance(job, types.CallToolResult):
                return job
            record = await self._await(ctx, TOOLS, job, params)
        return record if isinstance(record, types.InputRequiredResult) else tool_result(record)

    async def read_resource(
        self, ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult | types.InputRequiredResult:
        uri = str(params.uri)
        with mcp_call_span(ctx, uri):
            record = await self._await(ctx, RESOURCES, await self.prepare(ctx, RESOURCES, uri, uri), params)
        if isinstance(record, types.InputRequiredResult):
            return record
        return types.ReadResourceResult.model_validate(completed_or_raise(record), by_name=False)

    async def get_prompt(
        self, ctx: ServerRequestContext[Any, Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult | types.InputRequiredResult:
        arguments = dict(params.arguments or {})
        with mcp_call_span(ctx, params.name):
            job = await self.prepare(ctx, PROMPTS, params.name, arguments)
            record = await self._await(ctx, PROMPTS, job, params)
        if isinstance(record, types.InputRequiredResult):
            return record
        return types.GetPromptResult.model_validate(completed_or_raise(record), by_name=False)

    async def complete(
        self, ctx: ServerRequestContext[Any, Any], params: types.CompleteRequestParams
    ) -> types.CompleteResult:
        """completion/complete on the backend that owns the prompt or resource template."""
        ref = params.ref
        kind, name = (PROMPTS, ref.name) if isinstance(ref, types.PromptReference) else (RESOURCES, ref.uri)
        context = dict(params.context.arguments or {}) if params.context is not None else {}
        request = CompletionRequest(params.argument.name, params.argument.value, context)
        with mcp_call_span(ctx, name):
            job = await self._prepared(
                ctx,
                kind,
                name,
                lambda who, item: items.prepare_completion(self.ctx, who, kind, item, request, name),
            )
            # Not a multi-round-trip carrier: a completion's job is awaited without its questions.
            record = await self._run(ctx, kind, job, self._limit(job))
        return types.CompleteResult.model_validate(completed_or_raise(record), by_name=False)
