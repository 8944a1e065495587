"""Job functions. Each takes one plain JSON payload, never raises, and returns an envelope.

They hold no database session: everything they need travels in the payload. The worker
(workers/worker.py) claims a job, calls its function, and records the envelope it returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, cast

from mcp import Client, MCPError
from mcp.types import CONNECTION_CLOSED, METHOD_NOT_FOUND, REQUEST_TIMEOUT
from mcp_types import (
    LOG_LEVEL_META_KEY,
    SERVER_INFO_META_KEY,
    PromptReference,
    RequestParamsMeta,
    ResourceTemplateReference,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from shared import backend_errors, metrics, tracing
from shared.jobs.schemas import (
    BackendSpec,
    CallToolPayload,
    CompletePayload,
    DiscoverPayload,
    Envelope,
    GetPromptPayload,
    JobKind,
    JobPayload,
    ReadResourcePayload,
    backend_target,
)
from shared.jobs.store import Claim
from shared.subscriptions import Wanted, subscription_key
from workers import interactive
from workers.interactive import Interaction
from workers.progress import CallRelay, current_relay, relaying
from workers.sessions import session_expired
from workers.state import WorkerState, job_context

log = logging.getLogger(__name__)


def failure(kind: str, message: str) -> Envelope:
    return {"ok": False, "error": {"type": kind, "message": message}}


def classify(exc: BaseException, backend: BackendSpec) -> Envelope:
    """Map what the SDK raised to an error type the API turns into a status code, with a message
    that says what the backend's URL answered and what to try (shared/backend_errors.py)."""
    timeout_s = backend["timeout_s"]
    inner = backend_errors.leaf(exc)
    if isinstance(inner, TimeoutError) or (
        isinstance(inner, MCPError) and inner.code == REQUEST_TIMEOUT and not session_expired(inner)
    ):
        return failure("timeout", f"the backend did not answer within {timeout_s}s")
    if isinstance(inner, MCPError) and inner.code == CONNECTION_CLOSED:
        return failure("backend_unavailable", f"the backend connection closed: {inner.message}")
    kind, message = backend_errors.explain(exc, backend_target(backend), backend["transport"])
    return failure(kind, message)


@dataclass(frozen=True)
class JobRun:
    """One run of one job: what the state machine around the backend operation needs."""

    kind: JobKind
    job_id: str
    backend: BackendSpec
    retry_safe: bool  # may run again if an earlier attempt's worker died mid-call
    deadline: float  # epoch seconds; past it the caller has given up
    trace: dict[str, str] | None = None  # the enqueue's trace context (shared/tracing.py)
    live: bool = False  # the caller relays the job's events as they come
    log_level: str | None = None  # the least severe backend log the caller relays (None: none)

    @classmethod
    def of(cls, kind: JobKind, payload: JobPayload, *, side_effects: bool = True) -> JobRun:
        """The run its payload describes. A job without side effects (a read, a render, a
        completion, discovery) may always run again, whatever the payload says."""
        return cls(
            kind,
            payload["job_id"],
            payload["backend"],
            not side_effects or payload["retry_safe"],
            payload["deadline"],
            payload.get("trace"),
            payload.get("live_events", False),
            payload.get("log_level"),
        )


Operation = Callable[[Client], Awaitable[Envelope]]


async def run_job(
    ctx: dict[str, Any], run: JobRun, operation: Operation, fresh_session: bool = False
) -> Envelope:
    """The state machine around any backend operation. The claim started the job; the worker
    records the envelope returned here (and ends the arq job) in one round trip."""
    state, claim = job_context(ctx)
    if claim.previous not in ("queued", "running"):  # the claim counts input_required as running
        # Cancelled while queued, already finished, or its record expired: nothing to do.
        return failure("skipped", f"job was already {claim.previous}")
    started = time.time()
    queue_wait = max(0.0, started - claim.created)
    metrics.QUEUE_WAIT_SECONDS.labels(run.kind).observe(queue_wait)
    metrics.JOBS_IN_FLIGHT.inc()
    attributes = {"mcpq.job.id": run.job_id, "mcpq.gateway": run.backend["gateway"]}
    # A child of the API's enqueue span (its context came in the payload).
    with tracing.span(
        f"mcpq.run {run.kind}",
        kind=SpanKind.CONSUMER,
        parent=run.trace,
        attributes={**attributes, "mcpq.queue_wait_s": queue_wait, "mcpq.attempt": claim.attempts},
    ) as span:
        tracing.record_interval("mcpq.queue_wait", min(claim.created, started), started, attributes)
        # The backend's questions during this run go to the job's caller (workers/interactive.py).
        limit = ctx.get("limit")
        interaction = Interaction(
            run.job_id,
            state.store,
            state.answers,
            state.settings.input_timeout_s,
            [limit] if isinstance(limit, asyncio.Timeout) else [],
        )
        asking = interactive.current.set(interaction)
        try:
            # The backend's notifications during the call go to this job (workers/progress.py).
            with relaying(CallRelay(run.job_id, state.progress, run.live, run.log_level)):
                envelope = await _attempt(state, claim, run, operation, interaction, fresh_session)
        finally:
            interactive.current.reset(asking)
            interaction.close()
            metrics.JOBS_IN_FLIGHT.dec()
        if interaction.unanswered is not None:
            envelope = failure("input_timeout", interaction.unanswered)
        if span is not None and not envelope.get("ok"):
            span.set_status(Status(StatusCode.ERROR, envelope["error"]["type"]))
    finished = time.time()
    metrics.EXECUTION_SECONDS.labels(run.kind).observe(finished - started)
    metrics.END_TO_END_SECONDS.labels(run.kind).observe(max(0.0, finished - claim.created))
    outcome = "completed" if envelope.get("ok") else envelope["error"]["type"]
    metrics.JOBS.labels(run.kind, outcome).inc()
    if outcome not in ("completed", "skipped"):
        log.warning(
            "job %s on %s failed: %s", run.job_id, run.backend["gateway"], envelope["error"]["message"]
        )
    return envelope


async def _attempt(
    state: WorkerState,
    claim: Claim,
    run: JobRun,
    operation: Operation,
    interaction: Interaction,
    fresh_session: bool,
) -> Envelope:
    if claim.previous == "running" and not run.retry_safe:
        return failure(
            "worker_lost",
            f"the worker running this call stopped (attempt {claim.attempts}); not retried because the "
            "tool is not marked idempotentHint or readOnlyHint, so it may or may not have run",
        )
    if time.time() > run.deadline:
        return failure("expired", "the job waited in the queue past its deadline")
    backend = run.backend

    async def noted(client: Client) -> Envelope:
        with interactive.calling(client.session, interaction):
            return await operation(client)

    try:
        if fresh_session:
            # A session of its own with a fresh protocol probe: what a pooled session learned
            # earlier must not stand in for the server as it is now.
            async with (
                asyncio.timeout(backend["timeout_s"]) as limit,
                state.sessions.connect(backend) as client,
            ):
                interaction.limits.append(limit)
                return await noted(client)

        async def retried() -> None:
            # The session broke under a call that may have run: it is sent again on a fresh one
            # (retry-safe calls only), and that is another attempt.
            await state.store.add_attempt(run.job_id)

        async with asyncio.timeout(backend["timeout_s"] + 5) as limit:
            interaction.limits.append(limit)
            return await state.sessions.use(backend, noted, retry_safe=run.retry_safe, on_retry=retried)
    except Exception as exc:
        return classify(exc, backend)


def backend_span(method: str, target: str, backend: BackendSpec) -> AbstractContextManager[Span | None]:
    """The client span of one backend request: the parent the backend sees in its `traceparent`."""
    return tracing.span(
        f"{method} {target}",
        kind=SpanKind.CLIENT,
        attributes={
            "mcp.method.name": method,
            "mcpq.gateway": backend["gateway"],
            "server.address": backend_target(backend),
        },
    )


def request_meta(log_level: str | None = None) -> RequestParamsMeta | None:
    """The request's `_meta`: the current span's `traceparent`/`tracestate` (SEP-414; the transport
    copies them into the HTTP header, workers/backend_http.py), and the log level the caller
    relays, as the 2026-07-28 per-request opt-in (older servers log to every call anyway: the
    worker filters those, workers/progress.py). None when there is neither."""
    found: dict[str, Any] = dict(tracing.carrier() or {})
    if log_level is not None:
        found[LOG_LEVEL_META_KEY] = log_level
    # `_meta` is an open map (extra_items=Any): these keys are among its extra items.
    return cast(RequestParamsMeta, found) if found else None


def _dump(model: Any) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data


def _result(model: Any, *fields: str) -> dict[str, Any]:
    """A backend's result as JSON, unchanged: its `fields` and its `_meta`, but for the
    backend's own server-info stamp (2026-07-28), which names the backend, not the gateway."""
    dumped = _dump(model)
    body = {k: dumped[k] for k in fields if k in dumped}
    meta = {k: v for k, v in dumped.get("_meta", {}).items() if k != SERVER_INFO_META_KEY}
    if meta:
        body["_meta"] = meta
    return body


async def call_tool(ctx: dict[str, Any], payload: CallToolPayload) -> Envelope:
    async def call(client: Client) -> Envelope:
        with backend_span("tools/call", payload["tool"], payload["backend"]):
            result = await client.call_tool(
                payload["tool"],
                payload["arguments"],
                read_timeout_seconds=payload["backend"]["timeout_s"],
                # Every report, to this job (run_job set the relay in this task's context).
                progress_callback=current_relay().on_progress,
                meta=request_meta(payload.get("log_level")),
            )
        body = _result(result, "content", "structuredContent", "isError")
        body.setdefault("isError", False)
        return {"ok": True, "result": body}

    run = JobRun.of(JobKind.CALL_TOOL, payload)
    return await run_job(ctx, run, call)


async def read_resource(ctx: dict[str, Any], payload: ReadResourcePayload) -> Envelope:
    """Read one resource on a pooled session. Contents come back as MCP sent them: `text`, or
    `blob` (base64) for binary contents."""

    async def read(client: Client) -> Envelope:
        with backend_span("resources/read", payload["uri"], payload["backend"]):
            result = await client.read_resource(payload["uri"], meta=request_meta(payload.get("log_level")))
        return {"ok": True, "result": _result(result, "contents")}

    # Reading has no side effects, so a read interrupted by a dying worker is simply run again.
    run = JobRun.of(JobKind.READ_RESOURCE, payload, side_effects=False)
    return await run_job(ctx, run, read)


async def subscribe_resource(ctx: dict[str, Any], payload: ReadResourcePayload) -> Envelope:
    """Hold the backend subscription to a resource (workers/subscriptions.py): on this worker,
    unless a live worker holds it already. Safe to run again: holding is idempotent."""
    state, claim = job_context(ctx)
    if claim.previous not in ("queued", "running"):
        return failure("skipped", f"job was already {claim.previous}")
    if time.time() > payload["deadline"]:
        return failure("expired", "the job waited in the queue past its deadline")
    backend, uri = payload["backend"], payload["uri"]
    try:
        async with asyncio.timeout(backend["timeout_s"] + 5):
            await state.subscriptions.take(Wanted(subscription_key(backend, uri), backend, uri))
    except Exception as exc:
        return classify(exc, backend)
    return {"ok": True, "result": {}}


async def get_prompt(ctx: dict[str, Any], payload: GetPromptPayload) -> Envelope:
    """Render one prompt on a pooled session; the result is the MCP GetPromptResult as JSON."""

    async def render(client: Client) -> Envelope:
        with backend_span("prompts/get", payload["prompt"], payload["backend"]):
            result = await client.get_prompt(
                payload["prompt"], payload["arguments"] or None, meta=request_meta(payload.get("log_level"))
            )
        return {"ok": True, "result": _result(result, "description", "messages")}

    run = JobRun.of(JobKind.GET_PROMPT, payload, side_effects=False)
    return await run_job(ctx, run, render)


async def complete(ctx: dict[str, Any], payload: CompletePayload) -> Envelope:
    """completion/complete on the backend that owns the prompt or resource template; the result is
    the MCP CompleteResult as JSON. A backend without completions has no suggestions: an empty
    list, as a server that declares the capability may answer, not an error for the client."""
    ref = payload["ref"]
    target: PromptReference | ResourceTemplateReference = (
        PromptReference.model_validate(ref)
        if ref.get("type") == "ref/prompt"
        else ResourceTemplateReference.model_validate(ref)
    )

    async def run(client: Client) -> Envelope:
        with backend_span("completion/complete", payload["argument"]["name"], payload["backend"]):
            try:
                result = await client.complete(target, payload["argument"], payload["context"] or None)
            except MCPError as exc:
                if exc.code != METHOD_NOT_FOUND:
                    raise
                return {"ok": True, "result": {"completion": {"values": [], "hasMore": False}}}
        return {"ok": True, "result": _result(result, "completion")}

    # Completing has no side effects: safe to run again after a worker dies.
    job = JobRun.of(JobKind.COMPLETE, payload, side_effects=False)
    return await run_job(ctx, job, run)


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
    async def catalog(client: Client) -> Envelope:
        caps = client.server_capabilities
        info = client.server_info
        result: dict[str, Any] = {
            "protocol_version": client.protocol_version,
            "server": {"name": info.name, "version": info.version} if info else None,
            # What the backend supports (logging, completions, subscribe, listChanged...), as it
            # said in its handshake: the front door advertises what its backends have.
            "capabilities": _dump(caps),
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

    # Discovery only reads, so it is always safe to run again.
    run = JobRun.of(JobKind.DISCOVER, payload, side_effects=False)
    return await run_job(ctx, run, catalog, fresh_session=True)
