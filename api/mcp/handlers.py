"""The MCP server behind /v1/servers/{id}/mcp, built on the SDK's low-level `Server`.

Lists (`tools/list`, `resources/list`, `resources/templates/list`, `prompts/list`) are served
from the catalog in a short read session and never touch a backend. `tools/call`,
`resources/read` and `prompts/get` resolve the item in a short read session, close it, enqueue a
job and await it by push: no DB connection is held while a backend works. Progress the backend
reports is relayed to the client when it sent a `progressToken`; a client's
`notifications/cancelled` interrupts the handler, which cancels the job.
"""

from __future__ import annotations

import time
from typing import Any

import mcp_types as types
from mcp import MCPError
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp_types import INVALID_PARAMS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from api.mcp.tasks import TaskAwareServer, Tasks, background_tasks
from api.mcp.wire import caller_of, completed_or_raise, protocol_error, tool_error, tool_result
from api.tracing import mcp_call_span
from shared.context import AppContext
from shared.errors import InvalidArguments, MCPQError
from shared.items import service as items
from shared.items.kind import ItemKind, Request
from shared.jobs.schemas import JobRecord, PreparedJob
from shared.prompts.kind import PROMPTS
from shared.resources.kind import RESOURCES
from shared.tools.kind import TOOLS

RESOURCE_NOT_FOUND = -32002
# How much longer than the backend's own timeout (plus the queue wait) a handler waits for a job.
WAIT_SLACK_S = 30.0


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
        """Enqueue and await the job (pushed), relaying progress when the client asked for it; the
        job is cancelled if the client cancels the request. No DB session is open meanwhile."""
        started = time.perf_counter()
        meta: dict[str, Any] = dict(ctx.meta or {})
        wants_progress = meta.get("progress_token", meta.get("progressToken")) is not None

        async def relay(report: dict[str, Any]) -> None:
            await ctx.session.report_progress(
                float(report.get("progress") or 0), report.get("total"), report.get("message")
            )

        limit = self.ctx.settings.queue_ttl_s + job.backend_timeout_s + WAIT_SLACK_S
        try:
            with items.counted(kind, "mcp"):
                record = await self.ctx.queue.run(
                    job, limit, on_progress=relay if wants_progress else None, cancel_if_abandoned=True
                )
        except MCPQError as exc:
            raise protocol_error(exc) from None
        items.observe(kind, "mcp", record, started)
        return record

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
