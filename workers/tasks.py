"""Job functions. Each takes one plain JSON payload, never raises, and returns an envelope.

They hold no database session: everything they need travels in the payload.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mcp import Client, MCPError
from mcp.types import CONNECTION_CLOSED, METHOD_NOT_FOUND, REQUEST_TIMEOUT

from shared import metrics
from shared.jobs.schemas import (
    BackendSpec,
    CallToolPayload,
    DiscoverPayload,
    Envelope,
    GetPromptPayload,
    JobKind,
    ReadResourcePayload,
)
from shared.jobs.store import CANCELLED_ERROR, JobStore
from workers.sessions import SessionPool, describe, session_expired

log = logging.getLogger(__name__)

PROGRESS_MIN_INTERVAL_S = 0.2


def failure(kind: str, message: str) -> Envelope:
    return {"ok": False, "error": {"type": kind, "message": message}}


def classify(exc: BaseException, timeout_s: float) -> Envelope:
    """Map what the SDK raised to an error type the API turns into a status code."""
    if isinstance(exc, MCPError):
        if exc.code == REQUEST_TIMEOUT and not session_expired(exc):
            return failure("timeout", f"the backend did not answer within {timeout_s}s")
        if exc.code == CONNECTION_CLOSED:
            return failure("backend_unavailable", f"the backend connection closed: {exc.message}")
        return failure("protocol_error", f"MCP error {exc.code}: {exc.message}")
    if isinstance(exc, TimeoutError):
        return failure("timeout", f"the backend did not answer within {timeout_s}s")
    return failure("backend_unavailable", f"could not reach the backend: {describe(exc)}")


async def _guarded(
    ctx: dict[str, Any],
    kind: str,
    job_id: str,
    backend: BackendSpec,
    retry_safe: bool,
    deadline: float,
    work: Callable[[], Awaitable[Envelope]],
) -> Envelope:
    """The state machine around any backend operation: start, run, record the outcome, push it."""
    ctx["in_flight"] = ctx.get("in_flight", 0) + 1
    metrics.JOBS_IN_FLIGHT.inc()
    try:
        envelope = await _run_guarded(ctx, kind, job_id, backend, retry_safe, deadline, work)
    finally:
        ctx["in_flight"] -= 1
        metrics.JOBS_IN_FLIGHT.dec()
    outcome = "completed" if envelope.get("ok") else envelope["error"]["type"]
    metrics.JOBS.labels(kind, outcome).inc()
    if outcome not in ("completed", "skipped"):
        log.warning("job %s on %s failed: %s", job_id, backend["gateway"], envelope["error"]["message"])
    return envelope


async def _run_guarded(
    ctx: dict[str, Any],
    kind: str,
    job_id: str,
    backend: BackendSpec,
    retry_safe: bool,
    deadline: float,
    work: Callable[[], Awaitable[Envelope]],
) -> Envelope:
    store: JobStore = ctx["store"]
    previous, attempts, created = await store.start(job_id, ctx["worker_id"])
    if previous not in ("queued", "running"):
        # Cancelled while queued, already finished, or its record expired: nothing to do.
        return failure("skipped", f"job was already {previous}")
    started = time.time()
    metrics.QUEUE_WAIT_SECONDS.labels(kind).observe(max(0.0, started - created))
    if previous == "running" and not retry_safe:
        envelope = failure(
            "worker_lost",
            f"the worker running this call stopped (attempt {attempts}); not retried because the tool "
            "is not marked idempotentHint or readOnlyHint, so it may or may not have run",
        )
    elif time.time() > deadline:
        envelope = failure("expired", "the job waited in the queue past its deadline")
    else:
        try:
            envelope = await work()
        except asyncio.CancelledError:
            record = await store.get(job_id)
            if record is not None and record.cancel_requested:
                await store.finish(job_id, {"ok": False, "error": CANCELLED_ERROR})
            else:
                # The worker is shutting down: arq keeps the job for another worker, whose attempt
                # decides (re-run if retry-safe, else worker_lost). Make it due now, not later.
                await store.due_now(job_id)
            raise
        except Exception as exc:
            envelope = classify(exc, backend["timeout_s"])
    await store.finish(job_id, envelope)
    finished = time.time()
    metrics.EXECUTION_SECONDS.labels(kind).observe(finished - started)
    metrics.END_TO_END_SECONDS.labels(kind).observe(max(0.0, finished - created))
    return envelope


def _dump(model: Any) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data


async def call_tool(ctx: dict[str, Any], payload: CallToolPayload) -> Envelope:
    backend = payload["backend"]
    store: JobStore = ctx["store"]
    job_id = payload["job_id"]
    last_progress = 0.0

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        nonlocal last_progress
        now = time.monotonic()
        if now - last_progress >= PROGRESS_MIN_INTERVAL_S or (total is not None and progress >= total):
            last_progress = now
            await store.set_progress(job_id, {"progress": progress, "total": total, "message": message})

    async def call(client: Client) -> Envelope:
        result = await client.call_tool(
            payload["tool"],
            payload["arguments"],
            read_timeout_seconds=backend["timeout_s"],
            progress_callback=on_progress,
        )
        dumped = _dump(result)
        body = {k: dumped[k] for k in ("content", "structuredContent", "isError", "_meta") if k in dumped}
        body.setdefault("isError", False)
        return {"ok": True, "result": body}

    async def work() -> Envelope:
        sessions: SessionPool = ctx["sessions"]
        async with asyncio.timeout(backend["timeout_s"] + 5):
            return await sessions.run(backend, call, retry_safe=payload["retry_safe"])

    return await _guarded(
        ctx, JobKind.CALL_TOOL, job_id, backend, payload["retry_safe"], payload["deadline"], work
    )


async def read_resource(ctx: dict[str, Any], payload: ReadResourcePayload) -> Envelope:
    """Read one resource on a pooled session. Contents come back as MCP sent them: `text`, or
    `blob` (base64) for binary contents."""
    backend = payload["backend"]

    async def read(client: Client) -> Envelope:
        result = await client.read_resource(payload["uri"])
        dumped = _dump(result)
        return {"ok": True, "result": {k: dumped[k] for k in ("contents", "_meta") if k in dumped}}

    async def work() -> Envelope:
        sessions: SessionPool = ctx["sessions"]
        async with asyncio.timeout(backend["timeout_s"] + 5):
            return await sessions.run(backend, read, retry_safe=True)

    # Reading has no side effects, so a read interrupted by a dying worker is simply run again.
    return await _guarded(
        ctx, JobKind.READ_RESOURCE, payload["job_id"], backend, True, payload["deadline"], work
    )


async def get_prompt(ctx: dict[str, Any], payload: GetPromptPayload) -> Envelope:
    """Render one prompt on a pooled session; the result is the MCP GetPromptResult as JSON."""
    backend = payload["backend"]

    async def render(client: Client) -> Envelope:
        result = await client.get_prompt(payload["prompt"], payload["arguments"] or None)
        dumped = _dump(result)
        return {
            "ok": True,
            "result": {k: dumped[k] for k in ("description", "messages", "_meta") if k in dumped},
        }

    async def work() -> Envelope:
        sessions: SessionPool = ctx["sessions"]
        async with asyncio.timeout(backend["timeout_s"] + 5):
            return await sessions.run(backend, render, retry_safe=True)

    return await _guarded(
        ctx, JobKind.GET_PROMPT, payload["job_id"], backend, True, payload["deadline"], work
    )


async def _collect(fetch: Callable[[str | None], Awaitable[Any]], attr: str) -> list[dict[str, Any]]:
    """Follow `next_cursor` through every page; a server without the feature gives an empty list."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    seen: set[str] = set()
    while True:
        try:
            page = await fetch(cursor)
        except MCPError as exc:
            if exc.code == METHOD_NOT_FOUND:
                return items
            raise
        items.extend(_dump(item) for item in getattr(page, attr))
        cursor = page.next_cursor
        if not cursor or cursor in seen:  # a server that repeats a cursor must not loop us forever
            return items
        seen.add(cursor)


async def discover(ctx: dict[str, Any], payload: DiscoverPayload) -> Envelope:
    backend = payload["backend"]

    async def catalog(client: Client) -> Envelope:
        caps = client.server_capabilities
        info = client.server_info
        result: dict[str, Any] = {
            "protocol_version": client.protocol_version,
            "server": {"name": info.name, "version": info.version} if info else None,
            "tools": [],
            "resources": [],
            "resource_templates": [],
            "prompts": [],
        }
        if caps.tools is not None:
            result["tools"] = await _collect(lambda c: client.list_tools(cursor=c), "tools")
        if caps.resources is not None:
            result["resources"] = await _collect(lambda c: client.list_resources(cursor=c), "resources")
            result["resource_templates"] = await _collect(
                lambda c: client.list_resource_templates(cursor=c), "resource_templates"
            )
        if caps.prompts is not None:
            result["prompts"] = await _collect(lambda c: client.list_prompts(cursor=c), "prompts")
        return {"ok": True, "result": result}

    async def work() -> Envelope:
        # A session of its own with a fresh protocol probe: the catalog and capabilities must
        # come from the server as it is now, not from what a pooled session learned earlier.
        sessions: SessionPool = ctx["sessions"]
        async with asyncio.timeout(backend["timeout_s"]), sessions.connect(backend) as client:
            return await catalog(client)

    # Discovery only reads, so it is always safe to run again.
    return await _guarded(ctx, JobKind.DISCOVER, payload["job_id"], backend, True, payload["deadline"], work)
