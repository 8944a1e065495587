"""Liveness and readiness. No auth: orchestrators call these."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy import text

from shared import metrics
from shared.context import AppContext
from shared.gateways.breaker import BreakerStatus

router = APIRouter(tags=["health"])

# /ready answers within about this long even when PostgreSQL or Redis hangs.
READY_PROBE_TIMEOUT_S = 1.5


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


_READY: dict[int | str, dict[str, Any]] = {
    200: {"model": Readiness, "description": "PostgreSQL and Redis answer"},
    503: {"model": Readiness, "description": "One of them does not: `checks` says which"},
}
_METRICS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Prometheus text exposition", "content": {CONTENT_TYPE_LATEST: {}}}
}


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", responses=_READY)
async def ready(request: Request) -> JSONResponse:
    ctx = request.app.state.ctx
    checks: dict[str, str] = {}

    async def database() -> None:
        async with ctx.read_session_factory() as s:
            await s.execute(text("SELECT 1"))

    async def check(name: str, probe: Callable[[], Awaitable[None]]) -> None:
        try:
            await asyncio.wait_for(probe(), timeout=READY_PROBE_TIMEOUT_S)
            checks[name] = "ok"
        except Exception as exc:  # any failure means "not ready"; say which
            checks[name] = f"error: {type(exc).__name__}"

    # Both at once: a service that hangs costs the probe's timeout once, not once per service.
    await asyncio.gather(check("database", database), check("redis", ctx.queue.ping))
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )


@router.get("/metrics", responses=_METRICS, response_class=Response)
async def prometheus_metrics(request: Request) -> Response:
    """Prometheus exposition. Pool and queue gauges are read now, at scrape time."""
    ctx = request.app.state.ctx
    pool = request.app.state.engine.sync_engine.pool
    metrics.DB_POOL_SIZE.set(pool.size())
    metrics.DB_POOL_CHECKED_OUT.set(pool.checkedout())
    metrics.DB_POOL_OVERFLOW.set(max(0, pool.overflow()))
    metrics.WAITING_REQUESTS.set(ctx.queue.waiting)
    await _breakers(ctx)
    try:
        metrics.QUEUE_DEPTH.set(await ctx.queue.depth())
    except Exception:  # metrics must answer even while Redis is down; /ready reports that
        metrics.QUEUE_DEPTH.set(float("nan"))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _breakers(ctx: AppContext) -> None:
    """The gateways' circuit breakers, read at scrape time (stale labels go)."""
    metrics.BREAKER_OPEN.clear()
    metrics.BREAKER_FAILURES.clear()
    try:
        tripped = await ctx.breaker.tripped()
    except RedisError:  # metrics must answer while Redis is down; /ready reports that
        return
    for gateway_id, state in tripped.items():
        metrics.BREAKER_OPEN.labels(gateway_id).set(1 if state.status is BreakerStatus.OPEN else 0)
        metrics.BREAKER_FAILURES.labels(gateway_id).set(state.failures)
