"""Real services for every test run: PostgreSQL, Redis, MCP backends, the API and a worker.

Services come from TEST_DATABASE_URL / TEST_REDIS_URL, else the local ones on 127.0.0.1,
else embedded servers from PyPI wheels. Each run gets its own database and its own Redis db.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import redis as sync_redis
from cryptography.fernet import Fernet
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from api.main import create_app
from shared.config import Settings
from shared.migrate import upgrade_to_head
from shared.redis import make_redis
from tests.backends import Backends, free_port, serving
from tests.conformance.fixture_backend import FixtureBackend
from workers.worker import Worker

ADMIN_TOKEN = "test-admin-token"
RUN_ID = uuid.uuid4().hex[:10]
# The team the platform-admin `client` registers its gateways in (created with the client; the
# database is this run's own). Constants only: tests import this module a second time.
TEAM = "test-team"

# POST /v1/gateways with the given body (the `register` fixture).
Register = Callable[..., Awaitable[httpx.Response]]
# The test backends listen on 127.0.0.1; nothing else that is not public may be registered.
ALLOWED_NETWORKS = "127.0.0.1/32"
REDIS_LOCK_KEY = "mcpq:test-run-lock"


def _reachable(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def libpq_url(sqlalchemy_url: str) -> str:
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
    elif _reachable("127.0.0.1", 5432):
        yield "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    else:
        from deploy.embedded import EmbeddedPostgres

        with EmbeddedPostgres() as server:
            yield server.url()


@pytest.fixture(scope="session")
def redis_base_url() -> Iterator[str]:
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        yield url
    elif _reachable("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
    else:
        from deploy.embedded import EmbeddedRedis

        with EmbeddedRedis() as server:
            yield server.url()


@pytest.fixture(scope="session")
def database_url(postgres_admin_url: str) -> Iterator[str]:
    name = f"mcpq_test_{RUN_ID}"
    admin = libpq_url(postgres_admin_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(postgres_admin_url).set(drivername="postgresql+psycopg", database=name)
    rendered = url.render_as_string(hide_password=False)
    upgrade_to_head(rendered)
    yield rendered
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url(redis_base_url: str) -> Iterator[str]:
    """A Redis db of this run's own, claimed with a lock key so parallel runs never share one."""
    base = urlsplit(redis_base_url)
    for db in range(1, 16):
        url = urlunsplit((base.scheme, base.netloc, f"/{db}", base.query, ""))
        client = sync_redis.Redis.from_url(url)
        if client.set(REDIS_LOCK_KEY, RUN_ID, nx=True, ex=3 * 3600):
            client.flushdb()
            client.set(REDIS_LOCK_KEY, RUN_ID, ex=3 * 3600)
            try:
                yield url
            finally:
                client.flushdb()
                client.close()
            return
        client.close()
    pytest.fail("no free Redis db (1-15) for this test run")


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        admin_token=ADMIN_TOKEN,
        secret_keys=Fernet.generate_key().decode(),
        allowed_backend_networks=ALLOWED_NETWORKS,
        key_prefix=f"mcpq-test-{RUN_ID}",
        queue_name=f"mcpq-test-{RUN_ID}:queue",
        db_pool_size=5,
        db_max_overflow=5,
        discovery_timeout_s=15,
        default_wait_s=15,
        queue_ttl_s=120,
        result_ttl_s=600,
        mcp_connect_timeout_s=5,
        default_backend_timeout_s=30,
        worker_metrics_port=0,  # tests/test_metrics.py serves them on a port of its own
    )


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a worker process use this run's Redis db and queue."""
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "MCPQ_ADMIN_TOKEN": settings.admin_token,
        "MCPQ_SECRET_KEYS": settings.secret_keys,
        "MCPQ_ALLOWED_BACKEND_NETWORKS": settings.allowed_backend_networks,
        "MCPQ_KEY_PREFIX": settings.key_prefix,
        "MCPQ_QUEUE_NAME": settings.queue_name,
        "MCPQ_DEFAULT_BACKEND_TIMEOUT_S": str(settings.default_backend_timeout_s),
    }


@pytest.fixture(scope="session")
def backends() -> Iterator[Backends]:
    servers = Backends()
    servers.start()
    yield servers
    servers.stop()


def isolated(settings: Settings, **overrides: object) -> Settings:
    """The run's settings with a queue and key prefix of their own: no other worker or API of
    this test run sees these jobs."""
    suffix = uuid.uuid4().hex[:6]
    return settings.model_copy(
        update={
            "queue_name": f"{settings.queue_name}-{suffix}",
            "key_prefix": f"{settings.key_prefix}-{suffix}",
            **overrides,
        }
    )


@contextlib.asynccontextmanager
async def serve(app_settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app with these settings, running its lifespan, and a platform-admin client on it."""
    application = create_app(app_settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://mcpq.test",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=60,
        ) as http:
            yield application, http


@pytest.fixture(scope="session")
async def served(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with serve(settings) as (application, http):
        created = await http.post("/v1/teams", json={"name": TEAM})
        assert created.status_code == 201, created.text
        yield application, http


@pytest.fixture(scope="session")
def app(served: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return served[0]


@pytest.fixture(scope="session")
def client(served: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return served[1]


def make_worker(settings: Settings) -> Worker:
    return Worker(settings, make_redis(settings))


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Worker]:
    """An in-process worker (what `python -m workers` runs) on these settings' queue."""
    worker = make_worker(settings)
    task = asyncio.create_task(worker.async_run())
    try:
        yield worker
    finally:
        await worker.close()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture(scope="session")
async def worker(settings: Settings) -> AsyncIterator[Worker]:
    """An in-process worker on this run's queue."""
    async with running_worker(settings) as in_process:
        yield in_process


@pytest.fixture
async def gateway(
    client: httpx.AsyncClient, backends: Backends, worker: Worker
) -> AsyncIterator[dict[str, Any]]:
    """A gateway registered on the stateful streamable-HTTP backend, removed afterwards."""
    name = f"gw-{uuid.uuid4().hex[:8]}"
    response = await client.post(
        "/v1/gateways", json={"name": name, "url": backends.urls["stateful"], "team": TEAM}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    yield body
    await client.delete(f"/v1/gateways/{body['id']}")


@pytest.fixture
async def register(client: httpx.AsyncClient, worker: Worker) -> AsyncIterator[Register]:
    """POST /v1/gateways to the test team, named `unique()` unless the body names it; every
    gateway it creates is deleted afterwards."""
    created: list[str] = []

    async def post(**body: Any) -> httpx.Response:
        response = await client.post("/v1/gateways", json={"team": TEAM, "name": unique(), **body})
        if response.status_code == 201:
            created.append(response.json()["id"])
        return response

    yield post
    for gateway_id in created:
        await client.delete(f"/v1/gateways/{gateway_id}")


def unique(prefix: str = "gw") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def instant(value: str) -> datetime:
    """A timestamp the API sent, for comparing: as strings, "...:22Z" (a whole second, which
    the JSON encoder writes without a fraction) sorts after "...:22.037Z"."""
    return datetime.fromisoformat(value)


@pytest.fixture(scope="module")
def fixture_backend() -> Iterator[FixtureBackend]:
    """The conformance fixture backend (tests/conformance/fixture_backend.py) on a loopback port."""
    backend = FixtureBackend(free_port())
    backend.start()
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
async def api_url(app: FastAPI) -> AsyncIterator[str]:
    """The session's app (already started) served on a loopback port, for clients that need a
    real socket (SSE streams, a browser)."""
    async with serving(app, lifespan="off") as url:
        yield url
