"""MCP Tasks backed by jobs: a task IS a job. Two wire forms share one job-backed core:

- protocol 2025-11-25 (SEP-1686), described below;
- protocol 2026-07-28, the `io.modelcontextprotocol/tasks` extension (SEP-2663), an SDK
  `Extension` (`TasksExtension`): a `tools/call` from a client that declares the extension in
  its request capabilities is answered at once with `resultType: "task"` (id = job id), and
  `tasks/get` (the task, with the `CallToolResult` inlined once completed), `tasks/update` and
  `tasks/cancel` (both empty acknowledgements) work on it. `tasks/result` and `tasks/list` do
  not exist there.

A task-augmented `tools/call` (params carry `task`) enqueues the job and answers at once with
the task, whose id is the job id, so the same job is visible at GET /v1/jobs/{id}, and a job
submitted over REST is a task here. `tasks/get`, `tasks/result` (waits by push), `tasks/list`
(the team's tool-call jobs, newest first) and `tasks/cancel` read and cancel jobs. Each time the
task's status changes (input_required when its backend asks something, working once answered,
then its end), `notifications/tasks/status` goes to the session's standalone (GET) stream, on
whichever replica holds it (see api/mcp/sessions.py).

mcp 2.3.0 ships the task types but no server support, and its `tools/call` result sieve only
knows `CallToolResult`; so the task-augmented call is answered by a server middleware (which
owns its result) and the `tasks/*` methods are plain request handlers (they are not in the SDK's
spec surface, so they are dispatched as custom methods).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import mcp_types as types
from mcp import MCPError
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding, RequestHandler, compose_tool_call_handler
from mcp.server.lowlevel import Server
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.mcpserver.server import require_client_extension
from mcp.server.session import ServerSession
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from api.mcp import interactive
from api.mcp.interactive import RELATED_TASK_META_KEY
from api.mcp.wire import caller_of, failure_text, protocol_error, tool_result
from api.tracing import mcp_call_span
from shared.auth.schemas import Principal
from shared.config import Settings
from shared.errors import MCPQError
from shared.jobs.interactive import Until, asking_beyond
from shared.jobs.queue import JobQueue
from shared.jobs.schemas import JobKind, JobRecord, JobStatus, PreparedJob

# Makes a tools/call's job (or the tool error for arguments the model must correct).
PrepareCall = Callable[
    [ServerRequestContext[Any, Any], types.CallToolRequestParams],
    Awaitable[PreparedJob | types.CallToolResult],
]

log = logging.getLogger(__name__)

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
MODERN = frozenset(MODERN_PROTOCOL_VERSIONS)
POLL_INTERVAL_MS = 1000
LIST_PAGE = 50

_STATUS: dict[JobStatus, types.TaskStatus] = {
    JobStatus.QUEUED: "working",
    JobStatus.RUNNING: "working",
    JobStatus.INPUT_REQUIRED: "input_required",
    JobStatus.COMPLETED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}


@contextlib.asynccontextmanager
async def background_tasks(_: Server[Any]) -> AsyncIterator[anyio.abc.TaskGroup]:
    """The server's lifespan state: a task group for work that outlives its request (a task's
    status report), cancelled when the session manager stops."""
    async with anyio.create_task_group() as group:
        yield group
        group.cancel_scope.cancel()


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
        if protocol_version in MODERN_PROTOCOL_VERSIONS:
            return caps
        # Before 2026-07-28 tasks are the core `tasks` capability, not the extension.
        if caps.extensions:
            caps.extensions = {k: v for k, v in caps.extensions.items() if k != TASKS_EXTENSION} or None
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


def _moved_on(record: JobRecord) -> Until:
    """Ends a wait once the task's status is no longer `record`'s, or it asks something new."""
    status, news = _STATUS[record.status], asking_beyond(set(record.asking))
    return lambda now: _STATUS[now.status] != status or news(now)


class Tasks:
    def __init__(self, queue: JobQueue, settings: Settings, prepare_call: PrepareCall) -> None:
        self.queue = queue
        self.settings = settings
        self.prepare_call = prepare_call
        self.ttl_ms = settings.result_ttl_s * 1000

    def install(self, server: Server[Any], call_tool: RequestHandler) -> None:
        """The 2025-11-25 surface (middleware + methods gated to pre-2026 versions) and the
        2026-07-28 extension, applied to the low-level server the way `MCPServer` applies an
        `Extension`: its methods (gated to 2026-era versions), its `tools/call` interceptor and
        its advertisement. `tasks/get` and `tasks/cancel` exist in both, so one handler per
        method dispatches on the request's protocol version."""
        extension = TasksExtension(self)
        bindings = {b.method: b for b in extension.methods()}
        server.middleware.append(self.intercept)
        legacy: dict[str, tuple[type[Any], RequestHandler]] = {
            "tasks/get": (types.GetTaskRequestParams, self.get),
            "tasks/result": (types.GetTaskPayloadRequestParams, self.result),
            "tasks/list": (types.PaginatedRequestParams, self.list),
            "tasks/cancel": (types.CancelTaskRequestParams, self.cancel),
        }
        for method in sorted(legacy.keys() | bindings.keys()):
            old, new = legacy.get(method), bindings.get(method)
            params_type = new.params_type if new is not None else old[0] if old is not None else None
            assert params_type is not None
            server.add_request_handler(
                method,
                params_type,
                _by_version(method, old[1] if old else None, new.handler if new else None),
            )
        server.add_request_handler(
            "tools/call", types.CallToolRequestParams, compose_tool_call_handler([extension], call_tool)
        )
        server.extensions[extension.identifier] = extension.settings()

    async def submit(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> JobRecord | types.CallToolResult:
        """Enqueue the call as a job and return its record (or the tool error for bad arguments)."""
        with mcp_call_span(ctx, params.name):
            job = await self.prepare_call(ctx, params)
            if isinstance(job, types.CallToolResult):
                return job
            try:
                return await self.queue.submit(job)
            except MCPQError as exc:
                raise protocol_error(exc) from None

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
        try:
            params = types.CallToolRequestParams.model_validate(raw, by_name=False)
        except ValidationError:
            raise MCPError(code=INVALID_PARAMS, message="Invalid request parameters") from None
        record = await self.submit(ctx, params)
        if isinstance(record, types.CallToolResult):
            return record.model_dump(by_alias=True, mode="json", exclude_none=True)
        background = ctx.lifespan_context
        assert isinstance(background, anyio.abc.TaskGroup)  # the server's lifespan: background_tasks
        background.start_soon(self.report_status, ctx.session, caller_of(ctx).principal, record.id)
        return {"task": task_of(record, self.ttl_ms)}

    async def report_status(self, session: ServerSession, principal: Principal, job_id: str) -> None:
        """Send `notifications/tasks/status` on the session's standalone stream (on whichever
        replica holds it) each time the task's status changes, up to its end; woken by the job's
        pushes. Best effort, as the spec's MAY (polling stays the contract), and it never raises:
        it runs in the server's lifespan task group."""
        try:
            async for record in self.status_changes(principal, job_id):
                status = types.TaskStatusNotification(
                    params=types.TaskStatusNotificationParams.model_validate(
                        task_of(record, self.ttl_ms), by_name=False
                    )
                )
                # A 2025-11-25 notification that the SDK's ServerNotification union leaves out.
                await session.send_notification(status)  # type: ignore[arg-type]
        except MCPQError:  # the job expired meanwhile
            return
        except Exception:  # the session or Redis went away: polling still tells the client
            log.debug("no status report for task %s", job_id, exc_info=True)

    async def status_changes(
        self, principal: Principal, job_id: str, *, include_current: bool = False
    ) -> AsyncIterator[JobRecord]:
        """The task's job each time its task status changes (working, input_required, working
        again once answered, ..., then terminal), or it asks a new question while input_required
        (a change of its `inputRequests`); and as it stands first, with `include_current`. Each
        wait is woken by the job's push: the store publishes every move between working and
        input_required, while a job that never asks is pushed once, at its end."""
        record = await self.queue.get(job_id, principal)
        if include_current or record.status.terminal:
            yield record
        while not record.status.terminal:
            moved_on = _moved_on(record)
            record = await self.queue.get(job_id, principal, self.settings.max_wait_s, moved_on)
            if moved_on(record):
                yield record

    async def record(
        self,
        ctx: ServerRequestContext[Any, Any],
        task_id: str,
        wait_s: float = 0.0,
        until: Until | None = None,
    ) -> JobRecord:
        """The task's job as the caller may see it (optionally awaited); invalid params if not."""
        caller = caller_of(ctx)
        try:
            return await self.queue.get(task_id, caller.principal, wait_s, until)
        except MCPQError:
            raise MCPError(code=INVALID_PARAMS, message=f"Task not found: {task_id}") from None

    async def get(
        self, ctx: ServerRequestContext[Any, Any], params: types.GetTaskRequestParams
    ) -> dict[str, Any]:
        return task_of(await self.record(ctx, params.task_id), self.ttl_ms)

    async def result(
        self, ctx: ServerRequestContext[Any, Any], params: types.GetTaskPayloadRequestParams
    ) -> dict[str, Any]:
        """Blocks until the task is terminal (woken by the job's push), then returns its payload.
        Meanwhile each question the job's backend asks is sent to the client on this request's
        stream, tagged with the task, and its answer goes back to the job (the 2025-11-25 flow of
        an input_required task)."""
        max_wait = self.settings.max_wait_s
        record = await self.record(ctx, params.task_id)
        handled: set[str] = set()
        while not record.status.terminal:
            questions = {k: q for k, q in record.asking.items() if k not in handled}
            if questions:
                handled.update(questions)
                answers = await interactive.ask_client(ctx, questions, related_task=record.id)
                with contextlib.suppress(MCPQError):  # it ended, or the question timed out, meanwhile
                    await self.queue.answer(record.id, caller_of(ctx).principal, answers)
            record = await self.record(ctx, params.task_id, max_wait, asking_beyond(handled))
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
        caller = caller_of(ctx)
        if caller.anonymous:
            # An anonymous client has no identity to list by; it can still use its task ids.
            return {"tasks": []}
        try:
            offset = int(params.cursor or 0)
        except ValueError:
            raise MCPError(code=INVALID_PARAMS, message="Invalid cursor") from None
        records, more = await self.queue.tasks(caller.team, max(0, offset), LIST_PAGE)
        result: dict[str, Any] = {"tasks": [task_of(r, self.ttl_ms) for r in records]}
        if more:
            result["nextCursor"] = str(offset + LIST_PAGE)
        return result

    async def cancel(
        self, ctx: ServerRequestContext[Any, Any], params: types.CancelTaskRequestParams
    ) -> dict[str, Any]:
        record = await self.record(ctx, params.task_id)
        if record.status.terminal:
            raise MCPError(
                code=INVALID_PARAMS, message=f"Task {record.id} is already {_STATUS[record.status]}"
            )
        try:
            record = await self.queue.cancel(record.id, caller_of(ctx).principal)
        except MCPQError as exc:  # it finished meanwhile
            raise MCPError(code=INVALID_PARAMS, message=exc.detail) from None
        return task_of(record, self.ttl_ms)


def _by_version(method: str, legacy: RequestHandler | None, modern: RequestHandler | None) -> RequestHandler:
    """One handler for a method name both task surfaces may define: the 2026-era one (the
    extension's) on a 2026-era connection, the 2025-11-25 one before; -32601 where absent."""

    async def handler(ctx: ServerRequestContext[Any, Any], params: Any) -> HandlerResult:
        chosen = modern if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS else legacy
        if chosen is None:
            raise MCPError(code=METHOD_NOT_FOUND, message="Method not found", data=method)
        return await chosen(ctx, params)

    return handler


class UpdateTaskRequestParams(types.RequestParams):
    """`tasks/update` (SEP-2663): responses to a task's outstanding `inputRequests`."""

    task_id: str
    input_responses: dict[str, Any]


def declares_tasks(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Did this request's client capabilities include the tasks extension?"""
    capabilities = ctx.session.client_capabilities
    return bool(capabilities and capabilities.extensions and TASKS_EXTENSION in capabilities.extensions)


def detailed_task_of(record: JobRecord, ttl_ms: int) -> dict[str, Any]:
    """A job as a SEP-2663 `DetailedTask`: a completed tool call inlines its `CallToolResult`
    (an `isError` result is still `completed`); a failed job carries a JSON-RPC error."""
    legacy = task_of(record, ttl_ms)
    task: dict[str, Any] = {
        "taskId": legacy["taskId"],
        "status": legacy["status"],
        "createdAt": legacy["createdAt"],
        "lastUpdatedAt": legacy["lastUpdatedAt"],
        "ttlMs": ttl_ms,
        "pollIntervalMs": POLL_INTERVAL_MS,
    }
    if "statusMessage" in legacy:
        task["statusMessage"] = legacy["statusMessage"]
    if record.status is JobStatus.COMPLETED:
        if record.kind == JobKind.CALL_TOOL:
            task["result"] = tool_result(record).model_dump(by_alias=True, mode="json", exclude_none=True)
        else:
            task["result"] = dict(record.result) if isinstance(record.result, dict) else {}
        task["result"].setdefault("resultType", "complete")
    elif record.status is JobStatus.FAILED:
        task["error"] = {"code": INTERNAL_ERROR, "message": failure_text(record)}
    elif record.asking:
        # Answered with tasks/update (SEP-2663), by the same keys.
        task["inputRequests"] = record.asking
    return task


class TasksExtension(Extension):
    """`io.modelcontextprotocol/tasks` for protocol 2026-07-28 (SEP-2663), on the job-backed
    `Tasks`: every call is a job anyway, so a declaring client always gets a task."""

    identifier = TASKS_EXTENSION

    def __init__(self, tasks: Tasks) -> None:
        self.tasks = tasks

    def methods(self) -> list[MethodBinding]:
        return [
            MethodBinding("tasks/get", types.GetTaskRequestParams, self.get, MODERN),
            MethodBinding("tasks/update", UpdateTaskRequestParams, self.update, MODERN),
            MethodBinding("tasks/cancel", types.CancelTaskRequestParams, self.cancel, MODERN),
        ]

    async def intercept_tool_call(
        self,
        params: types.CallToolRequestParams,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
    ) -> HandlerResult:
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS or not declares_tasks(ctx):
            return await call_next(ctx)
        record = await self.tasks.submit(ctx, params)
        if isinstance(record, types.CallToolResult):
            return record
        task = detailed_task_of(record, self.tasks.ttl_ms)
        # CreateTaskResult carries the task only: never result/error/inputRequests.
        for inline in ("result", "error", "inputRequests"):
            task.pop(inline, None)
        return {"resultType": "task", **task}

    async def get(
        self, ctx: ServerRequestContext[Any, Any], params: types.GetTaskRequestParams
    ) -> dict[str, Any]:
        require_client_extension(ctx, TASKS_EXTENSION)
        record = await self.tasks.record(ctx, params.task_id)
        return detailed_task_of(record, self.tasks.ttl_ms)

    async def update(
        self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskRequestParams
    ) -> dict[str, Any]:
        """Deliver the client's answers to the task's `inputRequests` to its job, and acknowledge.
        An answer to a question no longer pending (answered already, timed out) is refused."""
        require_client_extension(ctx, TASKS_EXTENSION)
        record = await self.tasks.record(ctx, params.task_id)
        answers = {key: {"result": response} for key, response in params.input_responses.items()}
        if answers:
            try:
                await self.tasks.queue.answer(record.id, caller_of(ctx).principal, answers)
            except MCPQError as exc:
                raise MCPError(code=INVALID_PARAMS, message=exc.detail) from None
        return {}

    async def cancel(
        self, ctx: ServerRequestContext[Any, Any], params: types.CancelTaskRequestParams
    ) -> dict[str, Any]:
        """Acknowledge and cancel the job; a task already terminal stays as it is (the spec
        makes cancellation eventually consistent, so that is not an error)."""
        require_client_extension(ctx, TASKS_EXTENSION)
        record = await self.tasks.record(ctx, params.task_id)
        if not record.status.terminal:
            with contextlib.suppress(MCPQError):  # it finished meanwhile
                await self.tasks.queue.cancel(record.id, caller_of(ctx).principal)
        return {}
