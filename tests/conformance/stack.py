"""Run the official MCP conformance suite against /v1/servers/{id}/mcp.

Starts a real stack on loopback in this process: the test MCP backend (tests/backends.py), the
API under uvicorn, and an arq worker, on a database and Redis keys of its own. Registers a
gateway, composes a server from it (public_mcp, as the suite's client sends no token), then runs
each scenario with `npx @modelcontextprotocol/conformance server` (Node >= 22 on PATH) and exits
non-zero if any fails. Usage: python -m tests.conformance.stack [scenario ...]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import uvicorn
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

from api.main import create_app
from shared.config import Settings
from shared.redis import make_redis
from tests.backends import Backends, free_port
from workers.worker import Worker

SCENARIOS = [
    "server-initialize",
    "ping",
    "tools-list",
    "resources-list",
    "prompts-list",
    "tools-call-error",
    "dns-rebinding-protection",
    "server-sse-multiple-streams",
]
PACKAGE = os.environ.get("MCPQ_CONFORMANCE_PACKAGE", "@modelcontextprotocol/conformance@0.1.16")
ADMIN = "conformance-admin-token"


def _reachable(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


@contextlib.contextmanager
def services() -> Iterator[tuple[str, str]]:
    """(PostgreSQL admin URL, Redis URL): from the environment, the local ports, or embedded."""
    pg, redis = os.environ.get("TEST_DATABASE_URL"), os.environ.get("TEST_REDIS_URL")
    with contextlib.ExitStack() as stack:
        if not pg:
            if _reachable(5432):
                pg = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
            else:
                from deploy.embedded import EmbeddedPostgres

                pg = stack.enter_context(EmbeddedPostgres()).url()
        if not redis:
            if _reachable(6379):
                redis = "redis://127.0.0.1:6379/0"
            else:
                from deploy.embedded import EmbeddedRedis

                redis = stack.enter_context(EmbeddedRedis()).url()
        yield pg, redis


@contextlib.contextmanager
def database(admin_url: str) -> Iterator[str]:
    name = f"mcpq_conformance_{uuid.uuid4().hex[:8]}"
    libpq = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield (
            make_url(admin_url)
            .set(drivername="postgresql+psycopg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with psycopg.connect(libpq, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def running(
    settings: Settings, team_name: str, admin_token: str
) -> AsyncIterator[tuple[str, httpx.AsyncClient, dict[str, Any]]]:
    """API on a loopback port, an in-process worker and the test backend, registered as gateway
    `demo` in a new team. Yields the API's base URL, an admin client and the team."""
    backends = Backends()
    backends.start()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    worker = Worker(settings, make_redis(settings))
    working = asyncio.create_task(worker.async_run())
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {admin_token}"}
        async with httpx.AsyncClient(base_url=base, headers=headers) as http:
            team = (await http.post("/v1/teams", json={"name": team_name})).raise_for_status().json()
            gateway = await http.post(
                "/v1/gateways", json={"name": "demo", "url": backends.urls["stateful"], "team": team["id"]}
            )
            gateway.raise_for_status()
            yield base, http, team
    finally:
        server.should_exit = True
        await worker.close()
        working.cancel()
        for task in (serving, working):
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 10)
        backends.stop()


@contextlib.asynccontextmanager
async def stack(settings: Settings) -> AsyncIterator[str]:
    """API + worker + backend; yields the server's MCP URL."""
    async with running(settings, "conformance", ADMIN) as (base, http, team):
        created = await http.post(
            "/v1/servers",
            json={
                "name": "conformance",
                "team": team["id"],
                "tools": ["demo.echo", "demo.add", "demo.test_error_handling"],
                "resources": ["demo:demo://readme", "demo:demo://items/{item}"],
                "prompts": ["demo.greet"],
                "public_mcp": True,  # the suite's client sends no token
            },
        )
        created.raise_for_status()
        yield base + created.json()["mcp_path"]


def run_scenario(url: str, scenario: str) -> bool:
    command = ["npx", "-y", PACKAGE, "server", "--url", url, "--scenario", scenario]
    print(f"\n=== {scenario}: {' '.join(command)}", flush=True)
    done = subprocess.run(command, check=False, timeout=300)
    return done.returncode == 0


async def main(scenarios: list[str]) -> int:
    with services() as (pg, redis), database(pg) as db_url:
        run = uuid.uuid4().hex[:8]
        settings = Settings(
            database_url=db_url,
            redis_url=redis,
            admin_token=ADMIN,
            secret_keys=Fernet.generate_key().decode(),
            allowed_backend_networks="127.0.0.1/32",
            key_prefix=f"mcpq-conformance-{run}",
            queue_name=f"mcpq-conformance-{run}:queue",
            worker_metrics_port=0,
        )
        async with stack(settings) as url:
            results = {}
            for scenario in scenarios:
                results[scenario] = await asyncio.to_thread(run_scenario, url, scenario)
    print("\n=== conformance summary")
    for scenario, passed in results.items():
        print(f"{'PASS' if passed else 'FAIL'}  {scenario}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:] or SCENARIOS)))
