"""The FastAPI app. Engines, pools and the result listener are built in the lifespan, not at import."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.routing import Route

from api import errors
from api.console import console_app
from api.deps import authenticate
from api.limits import BodySizeLimit
from api.mcp.endpoint import MCP_METHODS, MCPEndpoint
from api.mcp.endpoint import route as mcp_route
from api.responses import AUTHENTICATED
from api.routers import gateways, health, items, jobs, servers, teams, tokens
from api.routers import queue as queue_routes
from api.tracing import TraceRequests
from shared import tracing
from shared.cache import TTLCache
from shared.config import Settings, get_settings
from shared.context import AppContext
from shared.db import make_engine, make_read_session_factory, make_session_factory
from shared.gateways.breaker import Breaker
from shared.gateways.follow import CatalogFollower
from shared.jobs.queue import JobQueue
from shared.migrate import upgrade_to_head
from shared.redis import make_redis, start_subscriber, stop_task
from shared.runtime import freeze_heap
from shared.security import SecretBox

log = logging.getLogger("mcpq.api")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if not settings.admin_token:
        raise RuntimeError("MCPQ_ADMIN_TOKEN must be set")
    secrets = SecretBox.from_settings(settings)  # refuses to start without MCPQ_SECRET_KEYS
    tracing.setup("mcpq-api")
    if settings.run_migrations:
        await asyncio.to_thread(upgrade_to_head, settings.database_url)
    engine = make_engine(settings, application_name="mcpq-api")
    redis = make_redis(settings)
    queue = JobQueue(redis, settings)
    ctx = AppContext(
        settings=settings,
        session_factory=make_session_factory(engine),
        read_session_factory=make_read_session_factory(engine),
        queue=queue,
        secrets=secrets,
        breaker=Breaker(redis, settings),
        item_cache=TTLCache(settings.catalog_cache_ttl_s),
        token_cache=TTLCache(settings.token_cache_ttl_s),
    )

    mcp = MCPEndpoint(ctx)
    follower = CatalogFollower(ctx, redis)

    def catalog_changed(message: str) -> None:
        ctx.item_cache.clear()
        mcp.catalog_changed(message)

    def reconnected() -> None:
        # Messages may have been missed while disconnected.
        queue.reconnected()
        mcp.reconnected()
        ctx.item_cache.clear()
        ctx.token_cache.clear()

    # One pub/sub connection per process carries job completions, catalog changes and revocations.
    subscriber = await start_subscriber(
        redis,
        {
            **queue.channels,
            ctx.catalog_channel: catalog_changed,
            ctx.tokens_channel: ctx.forget_token,
            **mcp.channels,
            **follower.channels,
        },
        reconnected,
    )
    app.state.ctx = ctx
    app.state.engine = engine
    app.state.mcp = mcp
    try:
        async with app.state.mcp.serving():
            freeze_heap()
            yield
    finally:
        await stop_task(subscriber)
        await follower.close()
        await redis.aclose()
        await engine.dispose()
        tracing.shutdown()


def create_app(settings: Settings | None = None) -> FastAPI:
    # FastAPI's own OpenTelemetry is off: mcpq makes its spans itself (api/tracing.py, to its own
    # provider), and with FastAPI's on, every request paid ~4 us asking the global providers.
    app = FastAPI(
        title="mcpq",
        version="0.1.0",
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings or get_settings()
    errors.install(app)
    app.include_router(health.router)
    # Authentication runs before the body is parsed, so an anonymous request learns nothing more.
    # The item routers come first: a request is matched against the routers in this order (their
    # paths do not overlap), and the calls are most of the traffic. Matching a tool call took
    # ~140 us with three routers before it, ~11 us with none (micro-benchmark).
    for router in (
        items.tools,
        items.resources,
        items.prompts,
        teams.router,
        tokens.router,
        gateways.router,
        servers.router,
        jobs.router,
        queue_routes.router,
    ):
        app.include_router(router, dependencies=[Depends(authenticate)], responses=AUTHENTICATED)
    # The MCP front door: an ASGI endpoint of its own (it authenticates by itself; see api/mcp).
    app.router.routes.append(Route("/v1/servers/{server_id}/mcp", endpoint=mcp_route, methods=MCP_METHODS))
    # The live console: static files that call the routes above with the token they are given.
    app.mount("/ui", console_app(), name="console")
    app.add_middleware(BodySizeLimit, max_bytes=app.state.settings.max_body_bytes)
    # Outermost: the request's span covers everything the app does with it.
    app.add_middleware(TraceRequests)
    return app


app = create_app()
