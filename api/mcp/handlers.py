"""The MCP server behind /v1/servers/{id}/mcp, built on the SDK's low-level `Server`.

Lists (`tools/list`, `resources/list`, `resources/templates/list`, `prompts/list`) are served
from the catalog in a short read session and never touch a backend. `tools/call`,
`resources/read` and `prompts/get` resolve the item in a short read session, close it, enqueue a
job and await it by push: no DB connection is held while a backend works. What the backend
sends during the call is relayed on the call's own stream, in order, before the result: progress
when the client sent a `progressToken` (under that token), and log entries at or above the
client's level (`logging/setLevel`, remembered per session; on 2026-07-28 the request's
`io.modelcontextprotocol/logLevel`). A client's `notifications/cancelled` interrupts the
handler, which cancels the job.
"""

from __future__ import annotations

import time
from typing import Any

import mcp_types as types
from mcp import MCPError
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp_types import INVALID_PARAMS, INVALID_REQUEST, LOG_LEVEL_META_KEY
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from api.mcp.tasks import TaskAwareServer, Tasks, background_tasks
from api.mcp.wire import caller_of, completed_or_raise, protocol_error, session_of, tool_error, tool_result
from api.tracing import mcp_call_span
from shared.context import AppContext
from shared.errors import InvalidArguments, MCPQError
from shared.items import service as items
from shared.items.kind import ItemKind, Request
from shared.jobs.queue import EventSink
from shared.jobs.schemas import LOG_LEVELS, JobEvent, JobRecord, PreparedJob
from shared.prompts.kind import PROMPTS
from shared.resources.kind import RESOURCES
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
        self.server: Server[Any] = TaskAwareServer(
            "mcpq",
            version="0.1.0",
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.list_resources,
            on_list_resource_templates=self.list_resource_templates,
            on_read_resource=self.read_resource,
            on_list_prompts=self.list_prompts,
            on_get_prompt=self.get_prompt,
            lifespan=background_tasks,
        )
        Tasks(ctx.queue, ctx.settings, self.prepare_call).install(self.server, self.call_tool)
        # Added after construction: the constructor's `on_set_logging_level` warns that 2026-07-28
        # dropped it, but older clients use it.
        self.server.add_request_handler(
            "logging/setLevel", types.SetLevelRequestParams, self.set_logging_level
        )

    # --- lists: the catalog only ----------------------------------------------------------------

    async def _members(
        self, ctx: ServerRequestContext[Any, Any], kind: ItemKind[Any, Any, Any, Any]
    ) -> list[tuple[Any, Any]]:
        return await items.on_server(self.ctx, kind, caller_of(ctx).server.id)

    async def list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        modern = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
        tools = [
            types.Tool(
                name=t.name,
                title=t.title,
                description=t.description,
                input_schema=t.input_schema,
                output_schema=t.output_schema,
                annotations=types.ToolAnnotations.model_validate(t.annotations) if t.annotations else None,
                # Any call may run as a task (2025-11-25): every call is a job anyway.
                execution=None if modern else types.ToolExecution(task_support="optional"),
            )
            for t, _ in await self._members(ctx, TOOLS)
        ]
        return types.ListToolsResult(tools=tools)

    async def list_resources(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(
            resources=[
                types.Resource(uri=r.uri, name=r.name, description=r.description, mime_type=r.mime_type)
                for r, _ in await self._members(ctx, RESOURCES)
                if not r.is_template
            ]
        )

    async def list_resource_templates(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(
            resource_templates=[
                types.ResourceTemplate(
                    uri_template=r.uri, name=r.name, description=r.description, mime_type=r.mime_type
                )
                for r, _ in await self._members(ctx, RESOURCES)
                if r.is_template
            ]
        )

    async def list_prompts(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return types.ListPromptsResult(
            prompts=[
                types.Prompt(
                    name=p.name,
                    description=p.description,
                    arguments=[types.PromptArgument.model_validate(a) for a in p.arguments or []],
                )
                for p, _ in await self._members(ctx, PROMPTS)
            ]
        )

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
        caller = caller_of(ctx)
        try:
            with items.counted(kind, "mcp"):
                item = await items.resolve_on_server(self.ctx, kind, caller.server.id, name)
                if item is None:
                    raise _unknown(kind, name)
                return items.prepare(self.ctx, caller.principal, kind, item, request, name)
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
        self, ctx: ServerRequestContext[Any, Any], kind: ItemKind[Any, Any, Any, Any], job: PreparedJob
    ) -> JobRecord:
        """Enqueue and await the job (pushed), relaying its events when the client asked for them;
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
        limit = self.ctx.settings.queue_ttl_s + job.backend_timeout_s + WAIT_SLACK_S
        try:
            with items.counted(kind, "mcp"):
                record = await self.ctx.queue.run(job, limit, on_event=relay, cancel_if_abandoned=True)
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
    ) -> types.CallToolResult:
        with mcp_call_span(ctx, params.name):
            job = await self.prepare_call(ctx, params)
            if isinstance(job, types.CallToolResult):
                return job
            return tool_result(await self._await(ctx, TOOLS, job))

    async def read_resource(
        self, ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        with mcp_call_span(ctx, uri):
            record = await self._await(ctx, RESOURCES, await self.prepare(ctx, RESOURCES, uri, uri))
        return types.ReadResourceResult.model_validate(completed_or_raise(record), by_name=False)

    async def get_prompt(
        self, ctx: ServerRequestContext[Any, Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        arguments = dict(params.arguments or {})
        with mcp_call_span(ctx, params.name):
            record = await self._await(ctx, PROMPTS, await self.prepare(ctx, PROMPTS, params.name, arguments))
        return types.GetPromptResult.model_validate(completed_or_raise(record), by_name=False)
