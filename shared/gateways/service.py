"""Register, refresh and remove gateways. Discovery runs on a worker; no session is open meanwhile."""

from __future__ import annotations

import uuid
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth.schemas import Principal, Role
from shared.config import Settings
from shared.context import AppContext
from shared.db import SessionFactory
from shared.errors import BackendError, Conflict, Forbidden, GatewayTimeout, NotFound, ValidationFailed
from shared.gateways import netguard, repository
from shared.gateways.schemas import BreakerOut, GatewayCreate, GatewayOut
from shared.ids import require_uuid
from shared.jobs.queue import JobQueue
from shared.jobs.schemas import BackendSpec, JobKind, JobStatus, PreparedJob, backend_target, job_payload
from shared.models import Gateway, utcnow
from shared.security import SecretBox
from shared.teams import service as team_service

STDIO = "stdio"


def backend_spec(gateway: Gateway) -> BackendSpec:
    """Copy what a worker needs out of the ORM row, as plain values. Headers and env stay encrypted."""
    spec: BackendSpec = {
        "gateway_id": str(gateway.id),
        "gateway": gateway.name,
        "url": gateway.url,
        "transport": gateway.transport,
        "headers_enc": gateway.headers_enc,
        "timeout_s": gateway.timeout_s,
    }
    if gateway.transport == STDIO:
        spec["command"] = gateway.command or ""
        spec["args"] = list(gateway.args or [])
        spec["env_enc"] = gateway.env_enc
        spec["cwd"] = gateway.cwd
    return spec


def check_stdio(principal: Principal, settings: Settings, command: str) -> None:
    """A stdio gateway runs a program on the worker hosts: only the platform admin may register,
    change or delete one (403), and only a program of MCPQ_STDIO_ALLOWED_COMMANDS (422)."""
    if not principal.platform:
        raise Forbidden("only the platform admin may register, change or delete a stdio gateway")
    allowed = settings.stdio_commands
    if not allowed:
        raise ValidationFailed("stdio gateways are disabled here: MCPQ_STDIO_ALLOWED_COMMANDS is empty")
    if command not in allowed:
        raise ValidationFailed(
            f"command {command!r} is not in MCPQ_STDIO_ALLOWED_COMMANDS ({', '.join(sorted(allowed))})"
        )


async def check_url(settings: Settings, url: str) -> None:
    """The SSRF guard: 422 unless every address the URL's host resolves to is admitted."""
    try:
        await netguard.check_url(url, settings.allowed_networks)
    except netguard.RefusedAddress as exc:
        raise ValidationFailed(str(exc)) from None


async def _visible(sf: SessionFactory, principal: Principal, raw_id: str, needed: Role) -> Gateway:
    """The gateway if the caller may act on it: 404 if it cannot see it, 403 if its role falls short."""
    gateway_id = require_uuid(raw_id, "gateway")
    async with sf() as s:
        gateway = await repository.get(s, gateway_id)
    if gateway is None:
        raise NotFound(f"gateway {raw_id} not found")
    principal.authorize(gateway.team_id, needed, f"gateway {raw_id}", public=gateway.visibility == "public")
    return gateway


async def _load_out(s: AsyncSession, gateways: list[Gateway]) -> list[GatewayOut]:
    """The gateways with their item counts (one query)."""
    counts = await repository.counts(s, [g.id for g in gateways])
    return [
        GatewayOut(
            id=g.id,
            team_id=g.team_id,
            visibility=g.visibility,
            name=g.name,
            url=g.url,
            transport=g.transport,
            command=g.command,
            args=g.args,
            cwd=g.cwd,
            timeout_s=g.timeout_s,
            status=g.status,
            protocol_version=g.protocol_version,
            server_name=g.server_name,
            server_version=g.server_version,
            capabilities=g.capabilities,
            tool_count=counts[g.id][0],
            resource_count=counts[g.id][1],
            prompt_count=counts[g.id][2],
            created_at=g.created_at,
            updated_at=g.updated_at,
            refreshed_at=g.refreshed_at,
        )
        for g in gateways
    ]


async def _discover(
    queue: JobQueue, spec: BackendSpec, team_id: uuid.UUID, settings: Settings
) -> dict[str, Any]:
    # Discovery only reads, so it is always safe to run again.
    job = PreparedJob(
        JobKind.DISCOVER,
        job_payload(spec, retry_safe=True, queue_ttl_s=settings.queue_ttl_s),
        f"{spec['gateway']} (discovery)",
        str(team_id),
    )
    record = await queue.run(job, settings.discovery_timeout_s)
    if record.status is JobStatus.COMPLETED:
        return dict(record.result)
    if record.status.terminal:
        error = record.error or {"type": "error", "message": "discovery failed"}
        raise BackendError(
            f"discovery of {backend_target(spec)} failed: {error['message']}", extra={"job_id": job.id}
        )
    await queue.abandon(job.id)
    raise GatewayTimeout(
        f"discovery of {backend_target(spec)} did not finish within {settings.discovery_timeout_s}s "
        "(is the backend slow, or are no workers running?)",
        extra={"job_id": job.id},
    )


def _apply_server_info(gateway: Gateway, catalog: dict[str, Any]) -> None:
    server = catalog.get("server") or {}
    gateway.protocol_version = catalog.get("protocol_version")
    gateway.server_name = server.get("name")
    gateway.server_version = server.get("version")
    gateway.capabilities = catalog.get("capabilities")
    gateway.status = "active"


async def register(ctx: AppContext, principal: Principal, body: GatewayCreate) -> GatewayOut:
    sf, settings = ctx.session_factory, ctx.settings
    if body.transport == STDIO:
        check_stdio(principal, settings, body.command or "")
    timeout_s = body.timeout_s or settings.default_backend_timeout_s
    if timeout_s > settings.max_backend_timeout_s:
        raise ValidationFailed(f"timeout_s may be at most {settings.max_backend_timeout_s}")
    team_ref = team_service.owner_ref(principal, body.team, "gateway")
    async with ctx.read_session_factory() as s:
        team = await team_service.authorized_team(s, principal, team_ref, Role.ADMIN)
        if await repository.name_taken(s, team.id, body.name):
            raise Conflict(f"this team already has a gateway named {body.name!r}")
        team_id = team.id
    if body.url is not None:
        await check_url(settings, body.url)  # resolves the host: no session is open meanwhile
    gateway = Gateway(
        id=uuid.uuid4(),
        team_id=team_id,
        visibility=body.visibility,
        name=body.name,
        url=body.url or "",
        transport=body.transport,
        headers_enc=ctx.secrets.seal(body.headers),
        command=body.command,
        args=body.args if body.transport == STDIO else None,
        env_enc=ctx.secrets.seal(body.env),
        cwd=body.cwd,
        timeout_s=timeout_s,
    )
    catalog = await _discover(ctx.queue, backend_spec(gateway), team_id, settings)
    _apply_server_info(gateway, catalog)
    async with sf() as s:
        s.add(gateway)
        try:
            await s.flush()
        except IntegrityError:
            raise Conflict(f"this team already has a gateway named {body.name!r}") from None
        await repository.replace_catalog(s, gateway.id, catalog)
        await s.commit()
    await ctx.catalog_changed()
    return await _show(ctx, gateway)


async def refresh(ctx: AppContext, principal: Principal, raw_id: str) -> GatewayOut:
    sf = ctx.session_factory
    gateway = await _visible(ctx.read_session_factory, principal, raw_id, Role.ADMIN)
    if gateway.transport != STDIO:
        # DNS may have changed since registration: check again what the name resolves to now.
        await check_url(ctx.settings, gateway.url)
    catalog = await _discover(ctx.queue, backend_spec(gateway), gateway.team_id, ctx.settings)
    async with sf() as s:
        fresh = await repository.get(s, gateway.id)
        if fresh is None:
            raise NotFound(f"gateway {raw_id} was deleted during the refresh")
        _apply_server_info(fresh, catalog)
        fresh.refreshed_at = fresh.updated_at = utcnow()
        before = await repository.server_views(s, fresh.id)
        await repository.replace_catalog(s, fresh.id, catalog)
        changed = repository.changed_lists(before, await repository.server_views(s, fresh.id))
        await s.commit()
    await ctx.catalog_changed(changed)
    return await _show(ctx, fresh)


async def _show(ctx: AppContext, gateway: Gateway) -> GatewayOut:
    async with ctx.read_session_factory() as s:
        (out,) = await _load_out(s, [gateway])
    (shown,) = await _with_breakers(ctx, [out])
    return shown


async def _with_breakers(ctx: AppContext, outs: list[GatewayOut]) -> list[GatewayOut]:
    """The gateways with their circuit breakers' states, read from Redis after the session closed;
    without Redis the rest is still shown."""
    try:
        states = await ctx.breaker.states([str(o.id) for o in outs])
    except RedisError:
        return outs
    return [
        out.model_copy(
            update={
                "breaker": BreakerOut(
                    status=state.status.value, failures=state.failures, retry_after_s=state.retry_after_s
                )
            }
        )
        for out, state in zip(outs, states, strict=True)
    ]


async def get(ctx: AppContext, principal: Principal, raw_id: str) -> GatewayOut:
    gateway = await _visible(ctx.read_session_factory, principal, raw_id, Role.VIEWER)
    return await _show(ctx, gateway)


async def list_all(ctx: AppContext, principal: Principal) -> list[GatewayOut]:
    async with ctx.read_session_factory() as s:
        outs = await _load_out(s, await repository.list_visible(s, principal.team_id))
    return await _with_breakers(ctx, outs)


async def delete(ctx: AppContext, principal: Principal, raw_id: str) -> None:
    gateway = await _visible(ctx.read_session_factory, principal, raw_id, Role.ADMIN)
    if gateway.transport == STDIO:
        principal.require_platform()
    async with ctx.session_factory() as s:
        shown = await repository.server_views(s, gateway.id)
        deleted = await repository.delete_gateway(s, gateway.id)
        await s.commit()
    if not deleted:
        raise NotFound(f"gateway {raw_id} not found")
    await ctx.catalog_changed(repository.changed_lists(shown, {}))


async def rotate_secrets(sf: SessionFactory, box: SecretBox) -> int:
    """Re-encrypt every gateway's headers and stdio env with the first key; returns how many
    gateways were rewritten."""
    async with sf() as s:
        gateways = await repository.sealed_credentials(s)
        for gateway in gateways:
            gateway.headers_enc = box.rotate(gateway.headers_enc)
            gateway.env_enc = box.rotate(gateway.env_enc)
        await s.commit()
    return len(gateways)
