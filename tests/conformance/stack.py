"""Run the official MCP conformance suite, all 32 server scenarios, twice: directly against the
fixture backend (tests/conformance/fixture_backend.py) and through the gateway at
/v1/servers/{id}/mcp, and print them side by side.

Starts a real stack on loopback in this process: the fixture backend, the API under uvicorn and an
arq worker, on a database and Redis keys of their own. Registers the fixture as gateway `fixture`,
composes one virtual server of all its tools, resources, templates and prompts (public_mcp: the
suite's client sends no token), then runs `npx @modelcontextprotocol/conformance server --suite all`
(Node >= 22 on PATH) against both URLs at once.

Exits non-zero if a scenario fails directly (the fixture is broken), or passes directly but fails
through the gateway and is not in EXPECTED_GATEWAY_FAILURES (with its reason).
Usage: python -m tests.conformance.stack [scenario ...]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
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
from tests.conformance.fixture_backend import FixtureBackend
from workers.worker import Worker

# The server scenarios of conformance 0.1.16 (`npx @modelcontextprotocol/conformance list`).
SCENARIOS = [
    "server-initialize",
    "logging-set-level",
    "ping",
    "completion-complete",
    "tools-list",
    "tools-call-simple-text",
    "tools-call-image",
    "tools-call-audio",
    "tools-call-embedded-resource",
    "tools-call-mixed-content",
    "tools-call-with-logging",
    "tools-call-error",
    "tools-call-with-progress",
    "tools-call-sampling",
    "tools-call-elicitation",
    "json-schema-2020-12",
    "elicitation-sep1034-defaults",
    "server-sse-polling",
    "server-sse-multiple-streams",
    "elicitation-sep1330-enums",
    "resources-list",
    "resources-read-text",
    "resources-read-binary",
    "resources-templates-read",
    "resources-subscribe",
    "resources-unsubscribe",
    "prompts-list",
    "prompts-get-simple",
    "prompts-get-with-args",
    "prompts-get-embedded-resource",
    "prompts-get-with-image",
    "dns-rebinding-protection",
]
# Scenarios the gateway does not pass yet, and why. Shrink this as the relays land: a scenario
# listed here that passes is reported, one not listed that fails makes the run fail.
EXPECTED_GATEWAY_FAILURES: dict[str, str] = {}
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


async def _refs(http: httpx.AsyncClient, plural: str, gateway: str) -> list[str]:
    """Every item of `gateway` of one kind, as refs, following the REST cursor."""
    refs: list[str] = []
    cursor: str | None = None
    while True:
        params = {"gateway": gateway, "limit": "500", **({"cursor": cursor} if cursor else {})}
        page = (await http.get(f"/v1/{plural}", params=params)).raise_for_status().json()
        key = "ref" if plural == "resources" else "qualified_name"
        refs += [item[key] for item in page["items"]]
        cursor = page.get("next_cursor")
        if not cursor:
            return refs


@contextlib.asynccontextmanager
async def stack(settings: Settings) -> AsyncIterator[tuple[str, str]]:
    """API + worker + fixture backend; yields (the fixture's URL, the virtual server's MCP URL)."""
    fixture = FixtureBackend(free_port())
    fixture.start()
    try:
        async with running(settings, "conformance", ADMIN) as (base, http, team):
            gateway = await http.post(
                "/v1/gateways", json={"name": "fixture", "url": fixture.url, "team": team["id"]}
            )
            gateway.raise_for_status()
            body: dict[str, Any] = {"name": "conformance", "team": team["id"], "public_mcp": True}
            for plural in ("tools", "resources", "prompts"):
                body[plural] = await _refs(http, plural, "fixture")
            created = await http.post("/v1/servers", json=body)
            created.raise_for_status()
            yield fixture.url, base + created.json()["mcp_path"]
    finally:
        fixture.stop()


def suite_command(url: str, out: Path, scenario: str | None) -> list[str]:
    which = ["--scenario", scenario] if scenario else ["--suite", "all"]
    return ["npx", "-y", PACKAGE, "server", "--url", url, *which, "-o", str(out)]


def outcomes(out: Path) -> dict[str, tuple[bool, str]]:
    """Per scenario: passed (no check FAILURE), and the failing checks' messages."""
    found: dict[str, tuple[bool, str]] = {}
    for checks_file in sorted(out.glob("server-*/checks.json")):
        checks: list[dict[str, Any]] = json.loads(checks_file.read_text())
        # The directory is `server-{scenario}-{timestamp}`.
        name = re.sub(r"-\d{4}-\d\d-\d\dT[\d-]+Z$", "", checks_file.parent.name.removeprefix("server-"))
        failed = [c for c in checks if c.get("status") == "FAILURE"]
        found[name] = (not failed, "; ".join(str(c.get("errorMessage") or c.get("id")) for c in failed))
    return found


async def run_suite(url: str, scenarios: list[str], out: Path) -> dict[str, tuple[bool, str]]:
    """Run the scenarios against `url` (all in one process when all are asked for)."""
    everything = set(scenarios) == set(SCENARIOS)
    for scenario in [None] if everything else scenarios:
        command = suite_command(url, out, scenario)
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        await asyncio.wait_for(proc.wait(), 600)
    found = outcomes(out)
    return {s: found.get(s, (False, "the suite recorded no result")) for s in scenarios}


def verdict(direct: dict[str, tuple[bool, str]], gateway: dict[str, tuple[bool, str]]) -> int:
    """Print the table and the closing note; the exit status."""
    width = max(len(s) for s in direct)
    print(f"\n{'scenario':<{width}}  direct  gateway")
    for scenario, (ok, _) in direct.items():
        through = "PASS" if gateway[scenario][0] else "FAIL"
        print(f"{scenario:<{width}}  {'PASS' if ok else 'FAIL':<6}  {through}")
    broken = [s for s, (ok, _) in direct.items() if not ok]
    lost = [s for s in direct if direct[s][0] and not gateway[s][0]]
    unexpected = [s for s in lost if s not in EXPECTED_GATEWAY_FAILURES]
    print(
        f"\ndirect {len(direct) - len(broken)}/{len(direct)}, "
        f"gateway {sum(ok for ok, _ in gateway.values())}/{len(gateway)}"
    )
    for s in broken:
        print(f"FIXTURE FAILS {s}: {direct[s][1]}")
    for s in lost:
        known = EXPECTED_GATEWAY_FAILURES.get(s)
        print(f"{'expected' if known else 'UNEXPECTED'} gateway failure {s}: {known or gateway[s][1]}")
        if known:
            print(f"    suite says: {gateway[s][1]}")
    for s in sorted(set(EXPECTED_GATEWAY_FAILURES) & set(direct)):
        if gateway[s][0]:
            print(f"now passes through the gateway: {s} (remove it from EXPECTED_GATEWAY_FAILURES)")
    return 1 if broken or unexpected else 0


async def main(scenarios: list[str]) -> int:
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        print(f"unknown scenarios: {', '.join(unknown)}")
        return 2
    with services() as (pg, redis), database(pg) as db_url, tempfile.TemporaryDirectory() as tmp:
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
        async with stack(settings) as (direct_url, gateway_url):
            # The SDK logs every session it opens and ends at INFO: hundreds of lines per run.
            logging.getLogger("mcp").setLevel(logging.WARNING)
            # Both runs at once: each scenario opens its own MCP session.
            direct, gateway = await asyncio.gather(
                run_suite(direct_url, scenarios, Path(tmp, "direct")),
                run_suite(gateway_url, scenarios, Path(tmp, "gateway")),
            )
    return verdict(direct, gateway)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:] or SCENARIOS)))
