"""Resources: the catalog, and reads through a worker (never inside a DB session)."""

from __future__ import annotations

import re
import time
from functools import lru_cache

from shared import catalog, pagination
from shared.auth.schemas import Principal, Role
from shared.config import Settings
from shared.context import AppContext
from shared.db import SessionFactory
from shared.errors import ValidationFailed
from shared.gateways.service import backend_spec
from shared.jobs.schemas import JobKind, JobRecord, ReadResourcePayload
from shared.jobs.service import new_job_id
from shared.models import Gateway, Resource
from shared.resources import repository
from shared.resources.schemas import ResolvedResource, ResourceOut, ResourcePage

MAX_PAGE = 500


def to_out(resource: Resource, gateway: Gateway) -> ResourceOut:
    return ResourceOut(
        id=resource.id,
        ref=f"{gateway.name}:{resource.uri}",
        uri=resource.uri,
        is_template=resource.is_template,
        name=resource.name,
        description=resource.description,
        mime_type=resource.mime_type,
        gateway=gateway.name,
        gateway_id=gateway.id,
    )


def resolved(resource: Resource, gateway: Gateway) -> ResolvedResource:
    return ResolvedResource(
        id=str(resource.id),
        uri=resource.uri,
        is_template=resource.is_template,
        ref=f"{gateway.name}:{resource.uri}",
        backend=backend_spec(gateway),
        team_id=gateway.team_id,
        public=gateway.visibility == "public",
    )


async def _lookup(sf: SessionFactory, principal: Principal, ref: str) -> tuple[Resource, Gateway]:
    return await catalog.lookup(
        sf,
        principal,
        ref,
        what="resource",
        separator=":",
        by_id=repository.by_id,
        by_name=repository.by_gateway_uri,
    )


async def get(ctx: AppContext, principal: Principal, ref: str) -> ResourceOut:
    return to_out(*await _lookup(ctx.read_session_factory, principal, ref))


async def list_page(
    ctx: AppContext, principal: Principal, *, gateway: str | None, cursor: str | None, limit: int
) -> ResourcePage:
    after = pagination.decode(cursor) if cursor else None
    async with ctx.read_session_factory() as s:
        rows = await repository.page(s, principal.team_id, gateway=gateway, after=after, limit=limit + 1)
    items = [to_out(r, g) for r, g in rows[:limit]]
    last = [items[-1].gateway, str(items[-1].gateway_id), items[-1].uri] if items else None
    return ResourcePage(items=items, next_cursor=pagination.next_cursor(last, len(rows) > limit))


@lru_cache(maxsize=1024)
def _template_regex(template: str) -> re.Pattern[str]:
    """An RFC 6570 URI template as a regex: `{var}` matches one path segment, `{+var}`, `{#var}`
    and the other operators match anything."""
    pattern = ""
    for literal, expression in re.findall(r"([^{]*)(\{[^}]*\})?", template):
        pattern += re.escape(literal)
        if expression:
            pattern += "[^/?#]+" if expression[1:2].isalnum() or expression[1:2] == "_" else ".*"
    return re.compile(pattern)


def concrete_uri(resource: ResolvedResource, uri: str | None) -> str:
    """The URI a read asks the backend for: a template needs one that matches it (422 otherwise)."""
    if resource.is_template:
        if uri is None:
            raise ValidationFailed(f"uri: {resource.ref} is a template; give the concrete uri to read")
        if not _template_regex(resource.uri).fullmatch(uri):
            raise ValidationFailed(f"uri: {uri!r} does not match the template {resource.uri!r}")
        return uri
    if uri is not None and uri != resource.uri:
        raise ValidationFailed(f"uri: {resource.ref} is not a template; its uri is {resource.uri!r}")
    return resource.uri


def payload(resource: ResolvedResource, uri: str, settings: Settings) -> ReadResourcePayload:
    return {
        "job_id": new_job_id(),
        "backend": resource.backend,
        "uri": uri,
        "deadline": time.time() + settings.queue_ttl_s,
    }


async def _readable(
    ctx: AppContext, principal: Principal, ref: str, uri: str | None
) -> tuple[ReadResourcePayload, str, str]:
    """The job payload, its label and the team the job belongs to, checked before anything is enqueued."""
    resource = resolved(*await _lookup(ctx.read_session_factory, principal, ref))
    principal.authorize(resource.team_id, Role.MEMBER, f"resource {ref!r}", public=resource.public)
    job = payload(resource, concrete_uri(resource, uri), ctx.settings)
    label = f"{resource.backend['gateway']}:{job['uri']}"
    return job, label, str(principal.team_id or resource.team_id)


async def read(
    ctx: AppContext, principal: Principal, ref: str, uri: str | None, wait_s: float | None
) -> JobRecord:
    wait = ctx.settings.default_wait_s if wait_s is None else wait_s
    if wait > ctx.settings.max_wait_s:
        raise ValidationFailed(f"timeout_s may be at most {ctx.settings.max_wait_s}")
    job, label, team = await _readable(ctx, principal, ref, uri)
    return await ctx.queue.run(JobKind.READ_RESOURCE, dict(job), label, wait, team=team)


async def submit(ctx: AppContext, principal: Principal, ref: str, uri: str | None) -> str:
    job, label, team = await _readable(ctx, principal, ref, uri)
    return await ctx.queue.submit(JobKind.READ_RESOURCE, dict(job), label, team=team)
