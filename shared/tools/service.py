"""Resolve tools, validate arguments, and turn a call into a queued job."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from jsonschema import SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from shared import catalog, metrics, pagination
from shared.auth.schemas import Principal, Role
from shared.config import Settings
from shared.context import AppContext
from shared.db import SessionFactory
from shared.errors import InvalidArguments, MCPQError, ValidationFailed
from shared.gateways.service import backend_spec
from shared.jobs.schemas import CallToolPayload, JobKind, JobRecord
from shared.jobs.service import new_job_id
from shared.models import Gateway, Tool
from shared.tools import repository
from shared.tools.schemas import ResolvedTool, ToolOut, ToolPage

log = logging.getLogger(__name__)

MAX_PAGE = 500


def _to_out(tool: Tool, gateway: Gateway) -> ToolOut:
    return ToolOut(
        id=tool.id,
        name=tool.name,
        qualified_name=f"{gateway.name}.{tool.name}",
        gateway=gateway.name,
        gateway_id=gateway.id,
        title=tool.title,
        description=tool.description,
        input_schema=tool.input_schema,
        output_schema=tool.output_schema,
        annotations=tool.annotations,
    )


def _retry_safe(annotations: dict[str, Any] | None) -> bool:
    hints = annotations or {}
    return bool(hints.get("idempotentHint") or hints.get("readOnlyHint"))


async def _lookup(sf: SessionFactory, principal: Principal, ref: str) -> tuple[Tool, Gateway]:
    return await catalog.lookup(
        sf,
        principal,
        ref,
        what="tool",
        separator=".",
        by_id=repository.by_id,
        by_name=repository.by_qualified_name,
    )


async def get(ctx: AppContext, principal: Principal, ref: str) -> ToolOut:
    return _to_out(*await _lookup(ctx.read_session_factory, principal, ref))


async def resolve(ctx: AppContext, principal: Principal, ref: str) -> ResolvedTool:
    """The tool as plain values: from the process cache, else from a short session.

    The cache is keyed by the caller's scope as well as the ref, since what a ref resolves to
    (and whether it resolves at all) depends on the caller's team.
    """

    async def load() -> tuple[ResolvedTool, float | None]:
        return resolved(*await _lookup(ctx.read_session_factory, principal, ref)), None

    return await ctx.tool_cache.get_or_load((principal.scope, ref), load)


def resolved(tool: Tool, gateway: Gateway) -> ResolvedTool:
    """The tool as plain values, copied out of the ORM rows."""
    return ResolvedTool(
        id=str(tool.id),
        name=tool.name,
        qualified_name=f"{gateway.name}.{tool.name}",
        input_schema=tool.input_schema,
        retry_safe=_retry_safe(tool.annotations),
        backend=backend_spec(gateway),
        team_id=gateway.team_id,
        public=gateway.visibility == "public",
    )


async def list_page(
    ctx: AppContext, principal: Principal, *, gateway: str | None, cursor: str | None, limit: int
) -> ToolPage:
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed(f"limit must be between 1 and {MAX_PAGE}")
    after = pagination.decode(cursor) if cursor else None
    async with ctx.read_session_factory() as s:
        rows = await repository.page(s, principal.team_id, gateway=gateway, after=after, limit=limit + 1)
    items = [_to_out(t, g) for t, g in rows[:limit]]
    last = [items[-1].gateway, str(items[-1].gateway_id), items[-1].name] if items else None
    return ToolPage(items=items, next_cursor=pagination.next_cursor(last, len(rows) > limit))


@lru_cache(maxsize=4096)
def _validator(schema_json: str) -> Validator | None:
    schema = json.loads(schema_json)
    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        # A backend's broken schema must not block its tool; the backend validates again anyway.
        log.warning("ignoring an invalid input schema: %s", exc.message)
        return None
    return cls(schema)


def check_arguments(tool: ResolvedTool, arguments: dict[str, Any]) -> None:
    validator = _validator(json.dumps(tool.input_schema, sort_keys=True))
    if validator is None:
        return
    errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    if errors:
        details = [
            {"path": "/".join(str(p) for p in e.absolute_path), "message": e.message} for e in errors[:20]
        ]
        raise InvalidArguments(
            f"arguments do not match the input schema of {tool.qualified_name}: {details[0]['message']}",
            extra={"errors": details},
        )


def payload(tool: ResolvedTool, arguments: dict[str, Any], settings: Settings) -> dict[str, Any]:
    payload: CallToolPayload = {
        "job_id": new_job_id(),
        "backend": tool.backend,
        "tool": tool.name,
        "arguments": arguments,
        "retry_safe": tool.retry_safe,
        "deadline": time.time() + settings.queue_ttl_s,
    }
    return dict(payload)


async def _callable(ctx: AppContext, principal: Principal, ref: str) -> tuple[ResolvedTool, str]:
    """The tool, if the caller may call it, and the team its job belongs to: the caller's own
    (a public tool called by another team runs as that team's job), or for the platform admin the
    tool's team."""
    tool = await resolve(ctx, principal, ref)
    principal.authorize(tool.team_id, Role.MEMBER, f"tool {ref!r}", public=tool.public)
    return tool, str(principal.team_id or tool.team_id)


async def call(
    ctx: AppContext, principal: Principal, ref: str, arguments: dict[str, Any], wait_s: float | None
) -> JobRecord:
    """Run a tool call and await it for up to `wait_s` (the session is closed before the wait)."""
    started = time.perf_counter()
    with _counted("sync"):
        settings = ctx.settings
        wait = settings.default_wait_s if wait_s is None else wait_s
        if wait > settings.max_wait_s:
            raise ValidationFailed(f"timeout_s may be at most {settings.max_wait_s}")
        tool, team = await _callable(ctx, principal, ref)
        check_arguments(tool, arguments)
        job = payload(tool, arguments, settings)
        record = await ctx.queue.run(JobKind.CALL_TOOL, job, tool.qualified_name, wait, team=team)
    status = record.status.value if record.status.terminal else "pending"
    metrics.CALLS.labels("sync", status).inc()
    metrics.CALL_SECONDS.observe(time.perf_counter() - started)
    return record


async def submit(ctx: AppContext, principal: Principal, ref: str, arguments: dict[str, Any]) -> str:
    with _counted("async"):
        tool, team = await _callable(ctx, principal, ref)
        check_arguments(tool, arguments)
        job = payload(tool, arguments, ctx.settings)
        job_id = await ctx.queue.submit(JobKind.CALL_TOOL, job, tool.qualified_name, team=team)
    metrics.CALLS.labels("async", "accepted").inc()
    return job_id


@contextmanager
def _counted(mode: str) -> Iterator[None]:
    """Count calls refused before they reached the queue (unknown tool, bad arguments, ...)."""
    try:
        yield
    except MCPQError:
        metrics.CALLS.labels(mode, "rejected").inc()
        raise
