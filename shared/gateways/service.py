"""Register, refresh and remove gateways. Discovery runs on a worker; no session is open meanwhile."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import Settings
from shared.context import AppContext
from shared.errors import BackendError, Conflict, GatewayTimeout, NotFound, ValidationFailed
from shared.gateways import repository
from shared.gateways.schemas import GatewayCreate, GatewayOut
from shared.jobs.schemas import BackendSpec, DiscoverPayload, JobKind, JobRecord, JobStatus
from shared.jobs.service import JobQueue, new_job_id
from shared.models import Gateway, utcnow


def parse_id(raw: str, what: str = "gateway") -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"{what} {raw!r} not found") from None


def backend_spec(gateway: Gateway) -> BackendSpec:
    """Copy what a worker needs out of the ORM row, as plain values."""
    return {
        "gateway_id": str(gateway.id),
        "gateway": gateway.name,
        "url": gateway.url,
        "transport": gateway.transport,
        "headers": dict(gateway.headers or {}),
        "timeout_s": gateway.timeout_s,
    }


async def _to_out(s: AsyncSession, gateways: list[Gateway]) -> list[GatewayOut]:
    counts = await repository.counts(s, [g.id for g in gateways])
    return [
        GatewayOut(
            id=g.id,
            name=g.name,
            url=g.url,
            transport=g.transport,
            timeout_s=g.timeout_s,
            status=g.status,
            protocol_version=g.protocol_version,
            server_name=g.server_name,
            server_version=g.server_version,
            tool_count=counts[g.id][0],
            resource_count=counts[g.id][1],
            prompt_count=counts[g.id][2],
            created_at=g.created_at,
            updated_at=g.updated_at,
            refreshed_at=g.refreshed_at,
        )
        for g in gateways
    ]


async def _discover(queue: JobQueue, spec: BackendSpec, settings: Settings) -> dict[str, Any]:
    job_id = new_job_id()
    payload: DiscoverPayload = {
        "job_id": job_id,
        "backend": spec,
        "deadline": time.time() + settings.queue_ttl_s,
    }
    record: JobRecord = await queue.run(
        JobKind.DISCOVER, dict(payload), f"{spec['gateway']} (discovery)", settings.discovery_timeout_s
    )
    if record.status is JobStatus.COMPLETED:
        return dict(record.result)
    if record.status.terminal:
        error = record.error or {"type": "error", "message": "discovery failed"}
        raise BackendError(f"discovery of {spec['url']} failed: {error['message']}", extra={"job_id": job_id})
    await queue.cancel(job_id)
    raise GatewayTimeout(
        f"discovery of {spec['url']} did not finish within {settings.discovery_timeout_s}s "
        "(is the backend slow, or are no workers running?)",
        extra={"job_id": job_id},
    )


def _apply_server_info(gateway: Gateway, catalog: dict[str, Any]) -> None:
    server = catalog.get("server") or {}
    gateway.protocol_version = catalog.get("protocol_version")
    gateway.server_name = server.get("name")
    gateway.server_version = server.get("version")
    gateway.status = "active"


async def register(ctx: AppContext, body: GatewayCreate) -> GatewayOut:
    sf, settings = ctx.session_factory, ctx.settings
    timeout_s = body.timeout_s or settings.default_backend_timeout_s
    if timeout_s > settings.max_backend_timeout_s:
        raise ValidationFailed(f"timeout_s may be at most {settings.max_backend_timeout_s}")
    async with ctx.read_session_factory() as s:
        if await repository.name_taken(s, body.name):
            raise Conflict(f"a gateway named {body.name!r} already exists")
    gateway = Gateway(
        id=uuid.uuid4(),
        name=body.name,
        url=body.url,
        transport=body.transport,
        headers=body.headers,
        timeout_s=timeout_s,
    )
    catalog = await _discover(ctx.queue, backend_spec(gateway), settings)
    _apply_server_info(gateway, catalog)
    async with sf() as s:
        s.add(gateway)
        try:
            await s.flush()
        except IntegrityError:
            raise Conflict(f"a gateway named {body.name!r} already exists") from None
        await repository.replace_catalog(s, gateway.id, catalog)
        await s.commit()
    await ctx.catalog_changed()
    return await _show(ctx, gateway)


async def refresh(ctx: AppContext, raw_id: str) -> GatewayOut:
    sf = ctx.session_factory
    gateway_id = parse_id(raw_id)
    async with ctx.read_session_factory() as s:
        gateway = await repository.get(s, gateway_id)
        if gateway is None:
            raise NotFound(f"gateway {raw_id} not found")
        spec = backend_spec(gateway)
    catalog = await _discover(ctx.queue, spec, ctx.settings)
    async with sf() as s:
        gateway = await repository.get(s, gateway_id)
        if gateway is None:
            raise NotFound(f"gateway {raw_id} was deleted during the refresh")
        _apply_server_info(gateway, catalog)
        gateway.refreshed_at = gateway.updated_at = utcnow()
        await repository.replace_catalog(s, gateway_id, catalog)
        await s.commit()
    await ctx.catalog_changed()
    return await _show(ctx, gateway)


async def _show(ctx: AppContext, gateway: Gateway) -> GatewayOut:
    async with ctx.read_session_factory() as s:
        return (await _to_out(s, [gateway]))[0]


async def get(ctx: AppContext, raw_id: str) -> GatewayOut:
    gateway_id = parse_id(raw_id)
    async with ctx.read_session_factory() as s:
        gateway = await repository.get(s, gateway_id)
        if gateway is None:
            raise NotFound(f"gateway {raw_id} not found")
        return (await _to_out(s, [gateway]))[0]


async def list_all(ctx: AppContext) -> list[GatewayOut]:
    async with ctx.read_session_factory() as s:
        return await _to_out(s, await repository.list_all(s))


async def delete(ctx: AppContext, raw_id: str) -> None:
    gateway_id = parse_id(raw_id)
    async with ctx.session_factory() as s:
        deleted = await repository.delete_gateway(s, gateway_id)
        await s.commit()
    if not deleted:
        raise NotFound(f"gateway {raw_id} not found")
    await ctx.catalog_changed()
