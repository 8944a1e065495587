"""The one pipeline for tools, resources and prompts.

An item is found (by ref for REST, by name within a virtual server for MCP) in a short read
session, or from the process cache; copied into plain values; authorized; its request checked;
and turned into a `PreparedJob`. Callers then hand that job to `ctx.queue` (submit, or run and
await). Caching, the owning-team rule, the wait limit and metrics apply to every kind alike.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from shared import metrics, pagination
from shared.auth.schemas import Principal, Role
from shared.config import Settings
from shared.context import AppContext
from shared.errors import MCPQError, NotFound, ValidationFailed
from shared.ids import parse_uuid
from shared.items import repository
from shared.items.kind import CompletionRequest, ItemKind, JobSpec, Out, Plain, Request, Row
from shared.jobs.interactive import asking_beyond
from shared.jobs.schemas import JobRecord, PreparedJob, job_payload

MAX_PAGE = 500


def wait_limit(settings: Settings, wait_s: float | None, name: str = "timeout_s") -> float:
    """How long a caller waits for a job: its own choice within the limit, else the default."""
    wait = settings.default_wait_s if wait_s is None else wait_s
    if wait > settings.max_wait_s:
        raise ValidationFailed(f"{name} may be at most {settings.max_wait_s}")
    return wait


# --- the catalog ----------------------------------------------------------------------------------


async def _find(
    ctx: AppContext, principal: Principal, kind: ItemKind[Row, Any, Any, Any], ref: str
) -> tuple[Row, Any]:
    """`ref` is the item's id or `{gateway}{separator}{key}`. Only items the caller sees are found:
    another team's private item is not found."""
    item_id = parse_uuid(ref)
    async with ctx.read_session_factory() as s:
        if item_id is not None:
            found = await repository.by_id(s, kind, principal.team_id, item_id)
        else:
            gateway, sep, key = ref.partition(kind.separator)
            found = await repository.by_name(s, kind, principal.team_id, gateway, key) if sep else None
    if found is None:
        # A bare name is the usual first mistake: say how a ref is written.
        bare = item_id is None and kind.separator not in ref
        hint = f"; refer to it by its id or as {{gateway}}{kind.separator}{ref}"
        hint += f" (GET /v1/{kind.plural} lists them)"
        raise NotFound(f"{kind.name} {ref!r} not found" + (hint if bare else ""))
    return found


async def get(ctx: AppContext, principal: Principal, kind: ItemKind[Any, Any, Out, Any], ref: str) -> Out:
    return kind.to_out(*await _find(ctx, principal, kind, ref))


async def list_page(
    ctx: AppContext,
    principal: Principal,
    kind: ItemKind[Any, Any, Out, Any],
    *,
    gateway: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Out], str | None]:
    """One page of the items the caller sees, and the cursor of the next page (None: the last)."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed(f"limit must be between 1 and {MAX_PAGE}")
    after = pagination.decode(cursor) if cursor else None
    async with ctx.read_session_factory() as s:
        rows = await repository.page(
            s, kind, principal.team_id, gateway=gateway, after=after, limit=limit + 1
        )
    shown = rows[:limit]
    last = [shown[-1][1].name, str(shown[-1][1].id), kind.key_of(shown[-1][0])] if shown else None
    return [kind.to_out(row, gw) for row, gw in shown], pagination.next_cursor(last, len(rows) > limit)


async def page_on_server(
    ctx: AppContext,
    kind: ItemKind[Row, Any, Any, Any],
    server_id: uuid.UUID,
    *,
    after: tuple[float, uuid.UUID] | None,
    limit: int,
    templates: bool | None = None,
) -> tuple[list[Row], list[tuple[float, uuid.UUID]], bool]:
    """One page of a virtual server's items of this kind (the MCP front door lists them): the
    rows, their places (position, id) and whether more follow."""
    async with ctx.read_session_factory() as s:
        found = await repository.page_on_server(
            s, kind, server_id, after=after, limit=limit + 1, templates=templates
        )
    shown = found[:limit]
    return [row for row, _, _ in shown], [(pos, row.id) for row, _, pos in shown], len(found) > limit


# --- from a ref to a prepared job -----------------------------------------------------------------


async def resolve(
    ctx: AppContext, principal: Principal, kind: ItemKind[Any, Plain, Any, Any], ref: str
) -> Plain:
    """The item as plain values: from the process cache, else from a short session.

    Keyed by the caller's scope as well as the ref, since what a ref resolves to (and whether it
    resolves at all) depends on the caller's team.
    """

    async def load() -> tuple[Any, float | None]:
        return kind.to_plain(*await _find(ctx, principal, kind, ref)), None

    found: Plain = await ctx.item_cache.get_or_load((kind.name, principal.scope, ref), load)
    return found


async def resolve_on_server(
    ctx: AppContext, kind: ItemKind[Any, Plain, Any, Any], server_id: uuid.UUID, name: str
) -> Plain | None:
    """The server's item that answers to `name` (an MCP client's tool name, resource URI or prompt
    name), as plain values; None if none does. Cached like `resolve`: what a server holds does not
    depend on who asks, and the caller is authorized afterwards."""

    async def load() -> tuple[Any, float | None]:
        async with ctx.read_session_factory() as s:
            rows = await repository.named_on_server(s, kind, server_id, name)
        candidates: Sequence[Plain] = [kind.to_plain(row, gw) for row, gw in rows]
        return kind.pick(candidates, name), None

    found: Plain | None = await ctx.item_cache.get_or_load((kind.name, f"server:{server_id}", name), load)
    return found


def prepare(
    ctx: AppContext,
    principal: Principal,
    kind: ItemKind[Any, Plain, Any, Request],
    item: Plain,
    request: Request,
    ref: str,
    idempotency_key: str | None = None,
) -> PreparedJob:
    """Authorize the caller for `item`, check the request, and make the job (nothing is enqueued)."""
    principal.authorize(item.team_id, Role.MEMBER, f"{kind.name} {ref!r}", public=item.public)
    return _job(ctx, principal, kind, item, kind.to_job(item, request), idempotency_key)


def prepare_completion(
    ctx: AppContext,
    principal: Principal,
    kind: ItemKind[Any, Plain, Any, Any],
    item: Plain,
    request: CompletionRequest,
    ref: str,
) -> PreparedJob:
    """The same for completing one of the item's arguments on its backend."""
    principal.authorize(item.team_id, Role.MEMBER, f"{kind.name} {ref!r}", public=item.public)
    if kind.to_completion is None:
        raise ValidationFailed(f"{kind.plural} have no arguments to complete")
    return _job(ctx, principal, kind, item, kind.to_completion(item, request), None)


def _job(
    ctx: AppContext,
    principal: Principal,
    kind: ItemKind[Any, Plain, Any, Any],
    item: Plain,
    spec: JobSpec,
    idempotency_key: str | None,
) -> PreparedJob:
    payload = job_payload(
        item.backend, retry_safe=spec.retry_safe, queue_ttl_s=ctx.settings.queue_ttl_s, **spec.fields
    )
    return PreparedJob(
        spec.job_kind or kind.job_kind,
        payload,
        spec.item,
        principal.job_team(item.team_id),
        idempotency_key,
    )


async def prepare_ref(
    ctx: AppContext,
    principal: Principal,
    kind: ItemKind[Any, Any, Any, Request],
    ref: str,
    request: Request,
    idempotency_key: str | None = None,
) -> PreparedJob:
    item = await resolve(ctx, principal, kind, ref)
    return prepare(ctx, principal, kind, item, request, ref, idempotency_key)


# --- run it ---------------------------------------------------------------------------------------


async def call(
    ctx: AppContext,
    principal: Principal,
    kind: ItemKind[Any, Any, Any, Request],
    ref: str,
    request: Request,
    wait_s: float | None,
    idempotency_key: str | None = None,
) -> JobRecord:
    """Prepare the job and await it for up to `wait_s`, or until its backend asks the caller
    something (answered at POST /v1/jobs/{id}/input); no DB session is open during the wait."""
    wait = wait_limit(ctx.settings, wait_s)
    started = time.perf_counter()
    with counted(kind, "sync"):
        job = await prepare_ref(ctx, principal, kind, ref, request, idempotency_key)
        record = await ctx.queue.run(job, wait, until=asking_beyond())
    observe(kind, "sync", record, started)
    return record


async def submit(
    ctx: AppContext,
    principal: Principal,
    kind: ItemKind[Any, Any, Any, Request],
    ref: str,
    request: Request,
    idempotency_key: str | None = None,
) -> JobRecord:
    """Prepare the job and enqueue it; the caller polls GET /v1/jobs/{id}."""
    with counted(kind, "async"):
        job = await prepare_ref(ctx, principal, kind, ref, request, idempotency_key)
        record = await ctx.queue.submit(job)
    metrics.CALLS.labels(kind.name, "async", "accepted").inc()
    return record


@contextmanager
def counted(kind: ItemKind[Any, Any, Any, Any], mode: str) -> Iterator[None]:
    """Count calls refused before they reached the queue (unknown item, bad arguments, limits...)."""
    try:
        yield
    except MCPQError:
        metrics.CALLS.labels(kind.name, mode, "rejected").inc()
        raise


def observe(kind: ItemKind[Any, Any, Any, Any], mode: str, record: JobRecord, started: float) -> None:
    """Count a call the caller awaited, by how it ended, and time it."""
    outcome = record.status.value if record.status.terminal else "pending"
    metrics.CALLS.labels(kind.name, mode, outcome).inc()
    metrics.CALL_SECONDS.labels(kind.name, mode).observe(time.perf_counter() - started)
