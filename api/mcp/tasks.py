"""MCP Tasks (protocol 2025-11-25, SEP-1686) backed by jobs: a task IS a job.

A task-augmented `tools/call` (params carry `task`) enqueues the job and answers at once with
the task, whose id is the job id, so the same job is visible at GET /v1/jobs/{id}, and a job
submitted over REST is a task here. `tasks/get`, `tasks/result` (waits by push), `tasks/list`
(the team's tool-call jobs, newest first) and `tasks/cancel` read and cancel jobs.

mcp 2.3.0 ships the task types but no server support, and its `tools/call` result sieve only
knows `CallToolResult`; so the task-augmented call is answered by a server middleware (which
owns its result) and the `tasks/*` methods are plain request handlers (they are not in the SDK's
spec surface, so they are dispatched as custom methods).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import mcp_types as types
from mcp import MCPError
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.lowlevel.server import NotificationOptions
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from shared.errors import InvalidArguments, MCPQError
from shared.jobs.schemas import JobKind, JobRecord, JobStatus

if TYPE_CHECKING:
    from api.mcp.handlers import FrontDoor

RELATED_TASK_META_KEY = "io.modelcontextprotocol/related-task"
POLL_INTERVAL_MS = 1000
LIST_PAGE = 50

_STATUS: dict[JobStatus, types.TaskStatus] = {
    JobStatus.QUEUED: "working",
    JobStatus.RUNNING: "working",
    JobStatus.COMPLETED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}


class TaskAwareServer(Server[Any]):
    """Advertises the 2025-11-25 `tasks` capability (list, cancel, task-augmented tools/call)."""

    def get_capabilities(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
        *,
        protocol_version: str | None = None,
    ) -> types.ServerCapabilities:
        caps = super().get_capabilities(
            notification_options, experimental_capabilities, extensions, protocol_version=protocol_version
        )
        if protocol_version not in MODERN_PROTOCOL_VERSIONS:
            caps.tasks = types.ServerTasksCapability(
                list=types.TasksListCapability(),
                cancel=types.TasksCancelCapability(),
                requests=types.ServerTasksRequestsCapability(
                    tools=types.TasksToolsCapability(call=types.TasksCallCapability())
                ),
            )
        return caps


def task_of(record: JobRecord, ttl_ms: int) -> dict[str, Any]:
    """A job as an MCP Task (wire form)."""
    task: dict[str, Any] = {
        "taskId": record.id,
        "status": _STATUS[record.status],
        "createdAt": record.created_at,
        "lastUpdatedAt": record.finished_at or record.started_at or record.created_at,
        "ttl": ttl_ms,
        "pollInterval": POLL_INTERVAL_MS,
    }
    if record.error is not None:
        task["statusMessage"] = f"{record.error['type']}: {record.error['message']}"
    elif record.progress and record.progress.get("message"):
        task["statusMessage"] = str(record.progress["message"])
    return task


class Tasks:
    def __init__(self, front: FrontDoor) -> None:
        self.front = front
        self.ttl_ms = front.ctx.settings.result_ttl_s * 1000

    def install(self, server: Server[Any]) -> None:
        server.middleware.append(self.intercept)
        server.add_request_handler("tasks/get", types.GetTaskRequestParams, self.get)
        server.add_request_handler("tasks/result", types.GetTaskPayloadRequestParams, self.result)
        server.add_request_handler("tasks/list", types.PaginatedRequestParams, self.list)
        server.add_request_handler("tasks/cancel", types.CancelTaskRequestParams, self.cancel)

    async def intercept(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """A task-augmented tools/call becomes a job answered at once; anything else passes."""
        raw = ctx.params
        if (
            ctx.method != "tools/call"
            or not isinstance(raw, dict)
            or raw.get("task") is None
            or ctx.protocol_version in MODERN_PROTOCOL_VERSIONS
            or ctx.request_id is None
        ):
            return await call_next(ctx)
        from api.mcp.handlers import caller_of, protocol_error

        try:
            params = types.CallToolRequestParams.model_validate(raw, by_name=False)
        except ValidationError:
            raise MCPError(code=INVALID_PARAMS, message="Invalid request parameters") from None
        caller = caller_of(ctx)
        try:
            job, label = await self.front.tool_job(caller, params.name, params.arguments or {})
        except InvalidArguments as exc:
            result = types.CallToolResult(content=[types.TextContent(text=exc.detail)], is_error=True)
            return result.model_dump(by_alias=True, mode="json", exclude_none=True)
        queue = self.front.ctx.queue
        try:
            job_id = await queue.submit(JobKind.CALL_TOOL, job, label, team=caller.team)
            record = await queue.store.get(job_id)
        except MCPQError as exc:
            raise protocol_error(exc) from None
        if record is None:
            raise MCPError(code=INTERNAL_ERROR, message=f"task {job_id} vanished")
        return {"task": task_of(record, self.ttl_ms)}

    async def _record(
        self, ctx: ServerRequestContext[Any, Any], task_id: str, wait_s: float = 0.0
    ) -> JobRecord:
        from api.mcp.handlers import caller_of

        caller = caller_of(ctx)
        try:
            return await self.front.ctx.queue.get(task_id, caller.principal, wait_s)
        except MCPQError:
            raise MCPError(code=INVALID_PARAMS, message=f"Task not found: {task_id}") from None

    async def get(
        self, ctx: ServerRequestContext[Any, Any], params: types.GetTaskRequestParams
    ) -> dict[str, Any]:
        return task_of(await self._record(ctx, params.task_id), self.ttl_ms)

    async def result(
        self, ctx: ServerRequestContext[Any, Any], params: types.GetTaskPayloadRequestParams
    ) -> dict[str, Any]:
        """Blocks until the task is terminal (woken by the job's push), then returns its payload."""
        from api.mcp.handlers import tool_result

        max_wait = self.front.ctx.settings.max_wait_s
        record = await self._record(ctx, params.task_id)
        while not record.status.terminal:
            record = await self._record(ctx, params.task_id, max_wait)
        if record.kind == JobKind.CALL_TOOL:
            body = tool_result(record).model_dump(by_alias=True, mode="json", exclude_none=True)
        elif record.status is JobStatus.COMPLETED and isinstance(record.result, dict):
            body = dict(record.result)
        else:
            raise MCPError(code=INTERNAL_ERROR, message=f"task {record.id} {record.status.value}")
        meta = dict(body.get("_meta") or {})
        meta[RELATED_TASK_META_KEY] = {"taskId": record.id}
        body["_meta"] = meta
        return body

    async def list(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams
    ) -> dict[str, Any]:
        from api.mcp.handlers import caller_of

        caller = caller_of(ctx)
        if caller.anonymous:
            # An anonymous client has no identity to list by; it can still use its task ids.
            return {"tasks": []}
        try:
            offset = int(params.cursor or 0)
        except ValueError:
            raise MCPError(code=INVALID_PARAMS, message="Invalid cursor") from None
        store = self.front.ctx.queue.store
        ids = await store.task_ids(caller.team, max(0, offset), LIST_PAGE + 1)
        records = [r for r in await store.get_many(ids[:LIST_PAGE]) if r is not None]
        result: dict[str, Any] = {"tasks": [task_of(r, self.ttl_ms) for r in records]}
        if len(ids) > LIST_PAGE:
            result["nextCursor"] = str(offset + LIST_PAGE)
        return result

    async def cancel(
        self, ctx: ServerRequestContext[Any, Any], params: types.CancelTaskRequestParams
    ) -> dict[str, Any]:
        from api.mcp.handlers import caller_of

        record = await self._record(ctx, params.task_id)
        if record.status.terminal:
            raise MCPError(
                code=INVALID_PARAMS, message=f"Task {record.id} is already {_STATUS[record.status]}"
            )
        try:
            record = await self.front.ctx.queue.cancel(record.id, caller_of(ctx).principal)
        except MCPQError as exc:  # it finished meanwhile
            raise MCPError(code=INVALID_PARAMS, message=exc.detail) from None
        return task_of(record, self.ttl_ms)
