"""Prompts: the catalog, and renders through a worker (never inside a DB session)."""

from __future__ import annotations

import time

from shared import catalog, pagination
from shared.auth.schemas import Principal, Role
from shared.config import Settings
from shared.context import AppContext
from shared.db import SessionFactory
from shared.errors import InvalidArguments, ValidationFailed
from shared.gateways.service import backend_spec
from shared.jobs.schemas import GetPromptPayload, JobKind, JobRecord
from shared.jobs.service import new_job_id
from shared.models import Gateway, Prompt
from shared.prompts import repository
from shared.prompts.schemas import PromptOut, PromptPage, ResolvedPrompt

MAX_PAGE = 500


def to_out(prompt: Prompt, gateway: Gateway) -> PromptOut:
    return PromptOut(
        id=prompt.id,
        name=prompt.name,
        qualified_name=f"{gateway.name}.{prompt.name}",
        gateway=gateway.name,
        gateway_id=gateway.id,
        description=prompt.description,
        arguments=prompt.arguments,
    )


def resolved(prompt: Prompt, gateway: Gateway) -> ResolvedPrompt:
    return ResolvedPrompt(
        id=str(prompt.id),
        name=prompt.name,
        qualified_name=f"{gateway.name}.{prompt.name}",
        arguments=tuple((str(a.get("name")), bool(a.get("required"))) for a in prompt.arguments or []),
        backend=backend_spec(gateway),
        team_id=gateway.team_id,
        public=gateway.visibility == "public",
    )


async def _lookup(sf: SessionFactory, principal: Principal, ref: str) -> tuple[Prompt, Gateway]:
    return await catalog.lookup(
        sf,
        principal,
        ref,
        what="prompt",
        separator=".",
        by_id=repository.by_id,
        by_name=repository.by_qualified_name,
    )


async def get(ctx: AppContext, principal: Principal, ref: str) -> PromptOut:
    return to_out(*await _lookup(ctx.read_session_factory, principal, ref))


async def list_page(
    ctx: AppContext, principal: Principal, *, gateway: str | None, cursor: str | None, limit: int
) -> PromptPage:
    after = pagination.decode(cursor) if cursor else None
    async with ctx.read_session_factory() as s:
        rows = await repository.page(s, principal.team_id, gateway=gateway, after=after, limit=limit + 1)
    items = [to_out(p, g) for p, g in rows[:limit]]
    last = [items[-1].gateway, str(items[-1].gateway_id), items[-1].name] if items else None
    return PromptPage(items=items, next_cursor=pagination.next_cursor(last, len(rows) > limit))


def check_arguments(prompt: ResolvedPrompt, arguments: dict[str, str]) -> None:
    """Required arguments present, no unknown ones: checked before anything is enqueued."""
    declared = {name for name, _ in prompt.arguments}
    missing = [name for name, required in prompt.arguments if required and name not in arguments]
    unknown = sorted(set(arguments) - declared)
    if missing or unknown:
        problems = [f"missing required argument {n!r}" for n in missing]
        problems += [f"unknown argument {n!r}" for n in unknown]
        raise InvalidArguments(
            f"arguments do not fit the prompt {prompt.qualified_name}: {'; '.join(problems)}",
            extra={"missing": missing, "unknown": unknown},
        )


def payload(prompt: ResolvedPrompt, arguments: dict[str, str], settings: Settings) -> GetPromptPayload:
    return {
        "job_id": new_job_id(),
        "backend": prompt.backend,
        "prompt": prompt.name,
        "arguments": arguments,
        "deadline": time.time() + settings.queue_ttl_s,
    }


async def _renderable(
    ctx: AppContext, principal: Principal, ref: str, arguments: dict[str, str]
) -> tuple[GetPromptPayload, str, str]:
    prompt = resolved(*await _lookup(ctx.read_session_factory, principal, ref))
    principal.authorize(prompt.team_id, Role.MEMBER, f"prompt {ref!r}", public=prompt.public)
    check_arguments(prompt, arguments)
    return (
        payload(prompt, arguments, ctx.settings),
        prompt.qualified_name,
        str(principal.team_id or prompt.team_id),
    )


async def render(
    ctx: AppContext, principal: Principal, ref: str, arguments: dict[str, str], wait_s: float | None
) -> JobRecord:
    wait = ctx.settings.default_wait_s if wait_s is None else wait_s
    if wait > ctx.settings.max_wait_s:
        raise ValidationFailed(f"timeout_s may be at most {ctx.settings.max_wait_s}")
    job, label, team = await _renderable(ctx, principal, ref, arguments)
    return await ctx.queue.run(JobKind.GET_PROMPT, dict(job), label, wait, team=team)


async def submit(ctx: AppContext, principal: Principal, ref: str, arguments: dict[str, str]) -> str:
    job, label, team = await _renderable(ctx, principal, ref, arguments)
    return await ctx.queue.submit(JobKind.GET_PROMPT, dict(job), label, team=team)
