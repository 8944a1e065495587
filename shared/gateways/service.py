"""Register, change, refresh and remove gateways. Discovery runs on a worker; no session is open
meanwhile."""

from __future__ import annotations

import contextlib
import logging
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
from shared.gateways.channels import gone_channel
from shared.gateways.schemas import (
    BreakerOut,
    GatewayCreate,
    GatewayOut,
    GatewayUpdate,
    OAuthClientCredentials,
    OAuthOut,
)
from shared.ids import require_uuid
from shared.jobs.queue import JobQueue
from shared.jobs.schemas import BackendSpec, JobKind, JobStatus, PreparedJob, backend_target, job_payload
from shared.models import Gateway, utcnow
from shared.security import SecretBox
from shared.teams import service as team_service

log = logging.getLogger(__name__)

STDIO = "stdio"


def backend_spec(gateway: Gateway) -> BackendSpec:
    """Copy what a worker needs out of the ORM row, as plain values. Credentials stay encrypted."""
    spec: BackendSpec = {
        "gateway_id": str(gateway.id),
        "gateway": gateway.name,
        "url": gateway.url,
        "transport": gateway.transport,
        "headers_enc": gateway.headers_enc,
        "auth_enc": gateway.auth_enc,
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


async def check_url(settings: Settings, url: str, what: str = "url") -> None:
    """The SSRF guard: 422 unless every address the URL's host resolves to is admitted."""
    try:
        await netguard.check_url(url, settings.allowed_networks)
    except netguard.RefusedAddress as exc:
        raise ValidationFailed(f"{what}: {exc}" if what != "url" else str(exc)) from None


async def _check_backend(settings: Settings, url: str, auth: OAuthClientCredentials | None) -> None:
    """The backend's URL, and its token endpoint's, through the SSRF guard (no session is open)."""
    await check_url(settings, url)
    if auth is not None:
        await check_url(settings, auth.token_url, "auth.token_url")


def _check_timeout(settings: Settings, timeout_s: float) -> None:
    if timeout_s > settings.max_backend_timeout_s:
        raise ValidationFailed(f"timeout_s may be at most {settings.max_backend_timeout_s}")


def _one_authorization(headers: dict[str, str], has_auth: bool) -> None:
    """`auth` sends its own Authorization header: a static one beside it would be overwritten."""
    if has_auth and any(name.lower() == "authorization" for name in headers):
        raise ValidationFailed("give either an Authorization header or auth, not both")


def _seal_auth(secrets: SecretBox, auth: OAuthClientCredentials | None) -> str:
    if auth is None:
        return ""
    return secrets.seal({k: str(v) for k, v in auth.model_dump(exclude_none=True).items()})


def _stored_auth(secrets: SecretBox, sealed: str) -> OAuthClientCredentials | None:
    return OAuthClientCredentials.model_validate(secrets.open(sealed)) if sealed else None


def _auth_out(secrets: SecretBox, sealed: str) -> OAuthOut | None:
    """The stored OAuth settings without the secret."""
    if not sealed:
        return None
    try:
        plain = secrets.open(sealed)
    except ValueError:
        # A key was dropped too early (see key rotation): show the gateway, say why not its auth.
        log.warning("the OAuth settings of a gateway cannot be decrypted with MCPQ_SECRET_KEYS")
        return None
    return OAuthOut(
        type=plain["type"],
        token_url=plain["token_url"],
        client_id=plain["client_id"],
        scope=plain.get("scope"),
        audience=plain.get("audience"),
    )


async def _visible(sf: SessionFactory, principal: Principal, raw_id: str, needed: Role) -> Gateway:
    """The gateway if the caller may act on it: 404 if it cannot see it, 403 if its role falls short."""
    gateway_id = require_uuid(raw_id, "gateway")
    async with sf() as s:
        gateway = await repository.get(s, gateway_id)
    if gateway is None:
        raise NotFound(f"gateway {raw_id} not found")
    principal.authorize(gateway.team_id, needed, f"gateway {raw_id}", public=gateway.visibility == "public")
    return gateway


async def _load_out(s: AsyncSession, secrets: SecretBox, gateways: list[Gateway]) -> list[GatewayOut]:
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
            auth=_auth_out(secrets, g.auth_enc),
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
    _check_timeout(settings, timeout_s)
    _one_authorization(body.headers, body.auth is not None)
    team_ref = team_service.owner_ref(principal, body.team, "gateway")
    async with ctx.read_session_factory() as s:
        team = await team_service.authorized_team(s, principal, team_ref, Role.ADMIN)
        if await repository.name_taken(s, team.id, body.name):
            raise Conflict(f"this team already has a gateway named {body.name!r}")
        team_id = team.id
    if body.url is not None:  # resolves the hosts: no session is open meanwhile
        await _check_backend(settings, body.url, body.auth)
    gateway = Gateway(
        id=uuid.uuid4(),
        team_id=team_id,
        visibility=body.visibility,
        name=body.name,
        url=body.url or "",
        transport=body.transport,
        headers_enc=ctx.secrets.seal(body.headers),
        auth_enc=_seal_auth(ctx.secrets, body.auth),
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
    gateway = await _visible(ctx.read_session_factory, principal, raw_id, Role.ADMIN)
    return await _show(ctx, await _rediscover(ctx, gateway))


async def refresh_by_id(ctx: AppContext, gateway_id: uuid.UUID) -> None:
    """Discover a gateway again on behalf of mcpq itself (its backend said its lists changed);
    a gateway deleted meanwhile is no error."""
    async with ctx.read_session_factory() as s:
        gateway = await repository.get(s, gateway_id)
    if gateway is not None:
        with contextlib.suppress(NotFound):
            await _rediscover(ctx, gateway)


async def _rediscover(ctx: AppContext, gateway: Gateway) -> Gateway:
    """The refresh pipeline: discover on a worker (no session open), then store the catalog."""
    if gateway.transport != STDIO:
        # DNS may have changed since registration: check again what the names resolve to now.
        await _check_backend(ctx.settings, gateway.url, _stored_auth(ctx.secrets, gateway.auth_enc))
    catalog = await _discover(ctx.queue, backend_spec(gateway), gateway.team_id, ctx.settings)
    async with ctx.session_factory() as s:
        fresh = await repository.get(s, gateway.id)
        if fresh is None:
            raise NotFound(f"gateway {gateway.id} was deleted during the refresh")
        _apply_server_info(fresh, catalog)
        fresh.refreshed_at = fresh.updated_at = utcnow()
        before = await repository.server_views(s, fresh.id)
        await repository.replace_catalog(s, fresh.id, catalog)
        changed = repository.changed_lists(before, await repository.server_views(s, fresh.id))
        await s.commit()
    await ctx.catalog_changed(changed)
    return fresh


HTTP_FIELDS = frozenset({"url", "headers", "auth"})
STDIO_FIELDS = frozenset({"command", "args", "env", "cwd"})


def _check_fields_fit(principal: Principal, gateway: Gateway, given: set[str]) -> None:
    """A stdio gateway is the platform admin's (403, before anything else is looked at); fields of
    the other transport are 422."""
    if gateway.transport == STDIO:
        principal.require_platform()
        if given & HTTP_FIELDS:
            raise ValidationFailed("url, headers and auth are for HTTP gateways, not stdio ones")
    elif given & STDIO_FIELDS:
        raise ValidationFailed(
            f"command, args, env and cwd are for stdio gateways, not {gateway.transport} ones"
        )


async def update(ctx: AppContext, principal: Principal, raw_id: str, body: GatewayUpdate) -> GatewayOut:
    """Change a gateway. A new URL or credential, or a stdio server's new command line, env or cwd,
    is tried first (a discovery with the new values, no session open meanwhile): if that fails,
    nothing changes and the caller gets its error."""
    gateway = await _visible(ctx.read_session_factory, principal, raw_id, Role.ADMIN)
    given = body.model_fields_set
    _check_fields_fit(principal, gateway, given)
    plain = ("url", "timeout_s", "visibility", "command", "args", "cwd")
    values: dict[str, Any] = {k: getattr(body, k) for k in plain if k in given}
    if "timeout_s" in values:
        _check_timeout(ctx.settings, values["timeout_s"])
    catalog: dict[str, Any] | None = None
    if given & (HTTP_FIELDS | STDIO_FIELDS):
        catalog = await _try_backend(ctx, principal, gateway, body, values)
    async with ctx.session_factory() as s:
        fresh = await repository.get(s, gateway.id)
        if fresh is None:
            raise NotFound(f"gateway {raw_id} not found")
        for name, value in values.items():
            setattr(fresh, name, value)
        fresh.updated_at = utcnow()
        changed: dict[uuid.UUID, set[str]] = {}
        if catalog is not None:
            _apply_server_info(fresh, catalog)
            fresh.refreshed_at = fresh.updated_at
            before = await repository.server_views(s, fresh.id)
            await repository.replace_catalog(s, fresh.id, catalog)
            changed = repository.changed_lists(before, await repository.server_views(s, fresh.id))
        await s.commit()
    if catalog is not None:
        await _sessions_gone(ctx, gateway.id)
    await ctx.catalog_changed(changed)  # who sees the items, or the items themselves, may have changed
    return await _show(ctx, fresh)


async def _try_backend(
    ctx: AppContext, principal: Principal, gateway: Gateway, body: GatewayUpdate, values: dict[str, Any]
) -> dict[str, Any]:
    """The catalog of the backend as `body` would have it, from a discovery with the new values;
    adds the sealed credentials (or env) to `values`. Raises if it fails."""
    if gateway.transport == STDIO:
        spec = _stdio_spec(ctx, principal, gateway, body, values)
    else:
        spec = await _http_spec(ctx, gateway, body, values)
    spec["timeout_s"] = values.get("timeout_s", gateway.timeout_s)
    return await _discover(ctx.queue, spec, gateway.team_id, ctx.settings)


async def _http_spec(
    ctx: AppContext, gateway: Gateway, body: GatewayUpdate, values: dict[str, Any]
) -> BackendSpec:
    """The gateway's spec with the new URL, headers or auth (through the SSRF guard)."""
    given = body.model_fields_set
    headers = body.headers if body.headers is not None else ctx.secrets.open(gateway.headers_enc)
    auth = body.auth if "auth" in given else _stored_auth(ctx.secrets, gateway.auth_enc)
    _one_authorization(headers, auth is not None)
    values["headers_enc"] = ctx.secrets.seal(headers) if "headers" in given else gateway.headers_enc
    values["auth_enc"] = _seal_auth(ctx.secrets, auth) if "auth" in given else gateway.auth_enc
    spec = backend_spec(gateway)
    spec["url"] = values.get("url", gateway.url)
    spec["headers_enc"], spec["auth_enc"] = values["headers_enc"], values["auth_enc"]
    await _check_backend(ctx.settings, spec["url"], auth)
    return spec


def _stdio_spec(
    ctx: AppContext, principal: Principal, gateway: Gateway, body: GatewayUpdate, values: dict[str, Any]
) -> BackendSpec:
    """The gateway's spec with the new command, args, env or cwd; the command (new or kept) must
    still be allowed."""
    spec = backend_spec(gateway)
    spec["command"] = values.get("command", spec["command"])
    check_stdio(principal, ctx.settings, spec["command"])
    if body.env is not None:
        values["env_enc"] = spec["env_enc"] = ctx.secrets.seal(body.env)
    spec["args"] = values.get("args", spec["args"])
    spec["cwd"] = values.get("cwd", spec["cwd"])
    return spec


async def _sessions_gone(ctx: AppContext, gateway_id: uuid.UUID) -> None:
    """Workers close their sessions to the gateway's old URL or credentials (best effort: unused,
    they close after MCPQ_MCP_SESSION_IDLE_S anyway)."""
    with contextlib.suppress(RedisError):
        await ctx.queue.broadcast(gone_channel(ctx.settings), str(gateway_id).encode())


async def _show(ctx: AppContext, gateway: Gateway) -> GatewayOut:
    async with ctx.read_session_factory() as s:
        (out,) = await _load_out(s, ctx.secrets, [gateway])
    (shown,) = await _with_live_state(ctx, [out])
    return shown


async def _with_live_state(ctx: AppContext, outs: list[GatewayOut]) -> list[GatewayOut]:
    """The gateways with their circuit breakers and health as calls saw them, read from Redis
    after the session closed; without Redis the rest is still shown."""
    try:
        live = await ctx.breaker.states_and_health([str(o.id) for o in outs])
    except RedisError:
        return outs
    return [
        out.model_copy(
            update={
                "breaker": BreakerOut(
                    status=state.status.value, failures=state.failures, retry_after_s=state.retry_after_s
                ),
                "last_seen_ok_at": health.last_seen_ok_at,
                "last_error": health.last_error,
                "last_error_at": health.last_error_at,
            }
        )
        for out, (state, health) in zip(outs, live, strict=True)
    ]


async def get(ctx: AppContext, principal: Principal, raw_id: str) -> GatewayOut:
    gateway = await _visible(ctx.read_session_factory, principal, raw_id, Role.VIEWER)
    return await _show(ctx, gateway)


async def list_all(ctx: AppContext, principal: Principal) -> list[GatewayOut]:
    async with ctx.read_session_factory() as s:
        outs = await _load_out(s, ctx.secrets, await repository.list_visible(s, principal.team_id))
    return await _with_live_state(ctx, outs)


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
    with contextlib.suppress(RedisError):
        await ctx.breaker.forget(str(gateway.id))
    await _sessions_gone(ctx, gateway.id)
    await ctx.catalog_changed(repository.changed_lists(shown, {}))


async def rotate_secrets(sf: SessionFactory, box: SecretBox) -> int:
    """Re-encrypt every gateway's headers, OAuth settings and stdio env with the first key; returns
    how many gateways were rewritten."""
    async with sf() as s:
        gateways = await repository.sealed_credentials(s)
        for gateway in gateways:
            gateway.headers_enc = box.rotate(gateway.headers_enc)
            gateway.env_enc = box.rotate(gateway.env_enc)
            gateway.auth_enc = box.rotate(gateway.auth_enc)
        await s.commit()
    return len(gateways)
