"""The MCP server behind /v1/servers/{id}/mcp, built on the SDK's low-level `Server`.

Lists (`tools/list`, `resources/list`, `resources/templates/list`, `prompts/list`) are served
from the catalog in a short read session and never touch a backend. `tools/call`,
`resources/read` and `prompts/get` resolve the item in a short read session, close it, enqueue a
job and await it by push: no DB connection is held while a backend works. Progress the backend
reports is relayed to the client when it sent a `progressToken`; a client's
`notifications/cancelled` interrupts the handler, which cancels the job.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types as types
from mcp import MCPError
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from api.mcp.tasks import TaskAwareServer, Tasks
from shared.auth.schemas import Principal, Role
from shared.context import AppContext
from shared.errors import InvalidArguments, MCPQError
from shared.jobs.schemas import JobKind, JobRecord, JobStatus
from shared.prompts import service as prompt_service
from shared.resources import service as resource_service
from shared.servers import repository as server_repository
from shared.servers.schemas import ServerSnapshot
from shared.tools import service as tool_service

RESOURCE_NOT_FOUND = -32002
# How much longer than the backend's own timeout (plus the queue wait) a handler waits for a job.
WAIT_SLACK_S = 30.0


@dataclass(frozen=True)
class Caller:
    """Who is calling which server: put on the ASGI scope by the endpoint, read by the handlers."""

    server: ServerSnapshot
    principal: Principal
    # An anonymous client of a `public_mcp` server (acting as a member of the server's team).
    anonymous: bool

    @property
    def team(self) -> str:
        return str(self.principal.team_id or self.server.team_id)


SCOPE_KEY = "mcpq.caller"


def caller_of(ctx: ServerRequestContext[Any, Any]) -> Caller:
    request = ctx.request
    caller = request.scope.get(SCOPE_KEY) if request is not None else None
    if not isinstance(caller, Caller):  # every request comes through the endpoint, which sets it
        raise MCPError(code=INVALID_REQUEST, message="no caller")
    return caller


def protocol_error(exc: MCPQError) -> MCPError:
    code = INVALID_PARAMS if exc.status_code in (404, 422) else INVALID_REQUEST
    return MCPError(code=code, message=exc.detail)


def _may(caller: Caller, owner: Any, public: bool, what: str) -> None:
    """Members and admins use the server's items; viewers only list them."""
    try:
        caller.principal.authorize(owner, Role.MEMBER, what, public=public)
    except MCPQError as exc:
        raise protocol_error(exc) from None


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
        )
        Tasks(self).install(self.server, self.call_tool)

    # --- lists: the catalog only ----------------------------------------------------------------

    async def list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        caller = caller_of(ctx)
        async with self.ctx.read_session_factory() as s:
            rows = await server_repository.tools(s, caller.server.id)
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
            for t, _ in rows
        ]
        return types.ListToolsResult(tools=tools)

    async def list_resources(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        caller = caller_of(ctx)
        async with self.ctx.read_session_factory() as s:
            rows = await server_repository.resources(s, caller.server.id)
        return types.ListResourcesResult(
            resources=[
                types.Resource(uri=r.uri, name=r.name, description=r.description, mime_type=r.mime_type)
                for r, _ in rows
                if not r.is_template
            ]
        )

    async def list_resource_templates(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        caller = caller_of(ctx)
        async with self.ctx.read_session_factory() as s:
            rows = await server_repository.resources(s, caller.server.id)
        return types.ListResourceTemplatesResult(
            resource_templates=[
                types.ResourceTemplate(
                    uri_template=r.uri, name=r.name, description=r.description, mime_type=r.mime_type
                )
                for r, _ in rows
                if r.is_template
            ]
        )

    async def list_prompts(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        caller = caller_of(ctx)
        async with self.ctx.read_session_factory() as s:
            rows = await server_repository.prompts(s, caller.server.id)
        return types.ListPromptsResult(
            prompts=[
                types.Prompt(
                    name=p.name,
                    description=p.description,
                    arguments=[types.PromptArgument.model_validate(a) for a in p.arguments or []],
                )
                for p, _ in rows
            ]
        )

    # --- calls: through the queue -----------------------------------------------------------------

    async def tool_job(
        self, caller: Caller, name: str, arguments: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        """The job payload of a call and its label; raises InvalidArguments for bad arguments."""
        async with self.ctx.read_session_factory() as s:
            found = await server_repository.tool_named(s, caller.server.id, name)
        if found is None:
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown tool: {name}")
        tool = tool_service.resolved(*found)
        _may(caller, tool.team_id, tool.public, f"tool {name!r}")
        tool_service.check_arguments(tool, arguments)
        return tool_service.payload(tool, arguments, self.ctx.settings), tool.qualified_name

    async def call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        caller = caller_of(ctx)
        try:
            job, label = await self.tool_job(caller, params.name, params.arguments or {})
        except InvalidArguments as exc:
            # Input validation errors are tool execution errors the model can correct (SEP-1303).
            return types.CallToolResult(content=[types.TextContent(text=exc.detail)], is_error=True)
        record = await self.run(ctx, caller, JobKind.CALL_TOOL, job, label)
        return tool_result(record)

    async def read_resource(
        self, ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        caller = caller_of(ctx)
        uri = str(params.uri)
        async with self.ctx.read_session_factory() as s:
            rows = await server_repository.resources(s, caller.server.id)
        resource = next(
            (resource_service.resolved(r, g) for r, g in rows if not r.is_template and r.uri == uri), None
        )
        if resource is None:  # then the first template the URI fits
            for r, g in rows:
                candidate = resource_service.resolved(r, g)
                if r.is_template and _fits(candidate, uri):
                    resource = candidate
                    break
        if resource is None:
            raise MCPError(code=RESOURCE_NOT_FOUND, message=f"Resource not found: {uri}", data={"uri": uri})
        _may(caller, resource.team_id, resource.public, f"resource {uri!r}")
        job = resource_service.payload(resource, uri, self.ctx.settings)
        record = await self.run(
            ctx, caller, JobKind.READ_RESOURCE, dict(job), f"{resource.backend['gateway']}:{uri}"
        )
        return types.ReadResourceResult.model_validate(completed_or_raise(record), by_name=False)

    async def get_prompt(
        self, ctx: ServerRequestContext[Any, Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        caller = caller_of(ctx)
        async with self.ctx.read_session_factory() as s:
            found = await server_repository.prompt_named(s, caller.server.id, params.name)
        if found is None:
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown prompt: {params.name}")
        prompt = prompt_service.resolved(*found)
        _may(caller, prompt.team_id, prompt.public, f"prompt {params.name!r}")
        arguments = dict(params.arguments or {})
        try:
            prompt_service.check_arguments(prompt, arguments)
        except InvalidArguments as exc:
            raise MCPError(code=INVALID_PARAMS, message=exc.detail) from None
        job = prompt_service.payload(prompt, arguments, self.ctx.settings)
        record = await self.run(ctx, caller, JobKind.GET_PROMPT, dict(job), prompt.qualified_name)
        return types.GetPromptResult.model_validate(completed_or_raise(record), by_name=False)

    async def run(
        self,
        ctx: ServerRequestContext[Any, Any],
        caller: Caller,
        kind: JobKind,
        job: dict[str, Any],
        label: str,
    ) -> JobRecord:
        """Enqueue and await the job (pushed), relaying progress; cancel the job if the client
        cancels the request. No DB session is open here."""
        queue = self.ctx.queue
        job_id = str(job["job_id"])
        limit = self.ctx.settings.queue_ttl_s + float(job["backend"]["timeout_s"]) + WAIT_SLACK_S
        meta: dict[str, Any] = dict(ctx.meta or {})
        token = meta.get("progress_token", meta.get("progressToken"))
        async with queue.waiters.watch(job_id) as watch, self._relay(ctx, job_id, token is not None):
            try:
                await queue.submit(kind, job, label, team=caller.team)
            except MCPQError as exc:
                raise MCPError(code=INTERNAL_ERROR, message=exc.detail) from None
            try:
                record = await watch.wait(limit)
            except BaseException:
                # The client cancelled (or the session ended): the job must not run on unseen.
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await queue.request_cancel(job_id)
                raise
        if record is None:
            raise MCPError(code=INTERNAL_ERROR, message=f"job {job_id} vanished")
        return record

    @contextlib.asynccontextmanager
    async def _relay(
        self, ctx: ServerRequestContext[Any, Any], job_id: str, wanted: bool
    ) -> AsyncIterator[None]:
        """Forward the job's progress reports as notifications/progress while the block runs."""
        if not wanted:
            yield
            return
        with self.ctx.queue.waiters.progress(job_id) as reports:

            async def forward() -> None:
                while True:
                    report = await reports.get()
                    await ctx.session.report_progress(
                        float(report.get("progress") or 0), report.get("total"), report.get("message")
                    )

            task = asyncio.create_task(forward())
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def _fits(resource: Any, uri: str) -> bool:
    try:
        resource_service.concrete_uri(resource, uri)
    except MCPQError:
        return False
    return True


def failure_text(record: JobRecord) -> str:
    if record.status is JobStatus.CANCELLED:
        return "the call was cancelled"
    if not record.status.terminal:
        return f"the call did not finish in time (job {record.id} is still {record.status.value})"
    error = record.error or {"type": "error", "message": "the job failed"}
    return f"{error['type']}: {error['message']}"


def tool_result(record: JobRecord) -> types.CallToolResult:
    """The stored CallToolResult, or a tool error that says what went wrong with the job."""
    if record.status is JobStatus.COMPLETED and isinstance(record.result, dict):
        return types.CallToolResult.model_validate(record.result, by_name=False)
    return types.CallToolResult(content=[types.TextContent(text=failure_text(record))], is_error=True)


def completed_or_raise(record: JobRecord) -> dict[str, Any]:
    if record.status is JobStatus.COMPLETED and isinstance(record.result, dict):
        return dict(record.result)
    raise MCPError(code=INTERNAL_ERROR, message=failure_text(record))
