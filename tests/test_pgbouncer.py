"""The API through PgBouncer in transaction pooling mode, with a 1 s idle-in-transaction timeout.

A private `pgbouncer` (deploy/pgbouncer.py; Debian package, `.ci/deps` installs it) on a port of
its own sits in front of this run's test database. Transaction pooling hands each transaction to
whichever server connection is free, and `idle_transaction_timeout = 1` drops any client that
keeps a transaction open for a second: a session held across a backend call or a queue wait
would fail here.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from deploy.pgbouncer import PgBouncer, pgbouncer_binary, running_pgbouncer
from shared.config import Settings
from tests.backends import Backends
from tests.conftest import isolated, running_worker, serve

pytestmark = pytest.mark.skipif(
    pgbouncer_binary() is None,
    reason="pgbouncer is not installed (Debian: apt-get install pgbouncer; .ci/deps does it)",
)

CALLS = 200
SERVER_POOL_SIZE = 4  # server connections per database: far fewer than the API's clients
STATS_PERIOD_S = 1
LISTS = 100
MINTS = 50


def pgbouncer_stats(port: int, database: str) -> dict[str, Any]:
    """The admin console's SHOW STATS row for `database`."""
    with psycopg.connect(
        host="127.0.0.1", port=port, dbname="pgbouncer", user="postgres", autocommit=True
    ) as conn:
        # The admin console speaks the simple query protocol only.
        cursor = conn.cursor()
        cursor.execute("SHOW STATS", prepare=False)
        columns = [c.name for c in cursor.description or []]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    return next(row for row in rows if row["database"] == database)


@pytest.fixture(scope="module")
def pgbouncer(database_url: str) -> Iterator[PgBouncer]:
    with running_pgbouncer(
        database_url, pool_size=SERVER_POOL_SIZE, stats_period_s=STATS_PERIOD_S
    ) as running:
        yield running


@pytest.fixture(scope="module")
def bounced(settings: Settings, pgbouncer: PgBouncer) -> Settings:
    return isolated(
        settings,
        database_url=pgbouncer.url(settings.database_url),
        db_pgbouncer=True,
        # Every request resolves its token and tool in the database: the most traffic through it.
        token_cache_ttl_s=0,
        catalog_cache_ttl_s=0,
    )


@pytest.fixture(scope="module")
async def bounced_api(bounced: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    # The API starts by applying migrations through PgBouncer (advisory lock, one transaction).
    async with running_worker(bounced), serve(bounced) as served:
        yield served


async def test_real_work_through_pgbouncer_in_transaction_mode(
    bounced_api: tuple[FastAPI, httpx.AsyncClient],
    pgbouncer: PgBouncer,
    bounced: Settings,
    backends: Backends,
) -> None:
    app, admin = bounced_api
    port, log_path = pgbouncer.port, pgbouncer.log_path
    database = make_url(bounced.database_url).database
    assert database is not None
    before = pgbouncer_stats(port, database)

    team = f"bouncer-{uuid.uuid4().hex[:6]}"
    assert (await admin.post("/v1/teams", json={"name": team})).status_code == 201
    minted = await admin.post("/v1/tokens", json={"name": "t", "team": team, "role": "admin"})
    assert minted.status_code == 201, minted.text
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://mcpq.test",
        headers={"Authorization": f"Bearer {minted.json()['token']}"},
        timeout=120,
    )
    async with client:
        registered = await client.post("/v1/gateways", json={"name": "gw", "url": backends.urls["stateful"]})
        assert registered.status_code == 201, registered.text
        tools = await client.get("/v1/tools", params={"gateway": "gw", "limit": 100})
        assert tools.status_code == 200, tools.text
        assert "echo" in {t["name"] for t in tools.json()["items"]}

        async def call(i: int) -> tuple[str, httpx.Response]:
            text = f"caller-{i}-{uuid.uuid4().hex}"
            response = await client.post(
                "/v1/tools/gw.delayed_echo/call",
                json={"arguments": {"text": text, "seconds": 0.2}, "timeout_s": 90},
            )
            return text, response

        async def mint(i: int) -> httpx.Response:
            return await client.post("/v1/tokens", json={"name": f"m{i}", "team": team, "role": "member"})

        # Concurrent calls share their token and tool lookups; lists and mints each need their own
        # transactions (a write for every mint): together, hundreds through SERVER_POOL_SIZE.
        results, lists, mints = await asyncio.gather(
            asyncio.gather(*(call(i) for i in range(CALLS))),
            asyncio.gather(*(client.get("/v1/tools", params={"gateway": "gw"}) for _ in range(LISTS))),
            asyncio.gather(*(mint(i) for i in range(MINTS))),
        )
        errors = [
            r.text
            for text, r in results
            if r.status_code != 200 or r.json()["result"]["content"][0]["text"] != text
        ]
        errors += [r.text for r in lists if r.status_code != 200]
        errors += [r.text for r in mints if r.status_code != 201]
        assert errors == [], errors[:3]

        assert (await client.get(f"/v1/teams/{team}")).status_code == 200
        assert (await client.get("/v1/tokens")).status_code == 200
        second = await client.post("/v1/tokens", json={"name": "t2", "team": team, "role": "viewer"})
        assert second.status_code == 201, second.text
        assert (await client.delete(f"/v1/tokens/{second.json()['id']}")).status_code == 204
        assert (await client.delete(f"/v1/gateways/{registered.json()['id']}")).status_code == 204
    assert (await admin.delete(f"/v1/teams/{team}")).status_code == 204

    await asyncio.sleep(STATS_PERIOD_S * 1.5)
    after = pgbouncer_stats(port, database)
    print("pgbouncer SHOW STATS delta:", {k: after[k] - before[k] for k in after if k.startswith("total_")})
    # Every call resolved its token and tool through PgBouncer, in its own short transactions.
    assert after["total_xact_count"] - before["total_xact_count"] >= LISTS + MINTS
    # Nothing was cut by idle_transaction_timeout, no server error (a prepared statement gone).
    trouble = [
        line
        for line in log_path.read_text().splitlines()
        if "idle transaction timeout" in line or " ERROR " in line or "prepared statement" in line
    ]
    assert trouble == [], trouble[:5]
