"""The invariant mcpq exists for: no DB connection is held while a backend call is in flight.

A backend tool is held mid-call; meanwhile the API's SQLAlchemy pool must have nothing checked
out and PostgreSQL must show no session of ours idle in transaction.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import psycopg
from fastapi import FastAPI

from tests.backends import Backends
from tests.conftest import libpq_url, unique


def _pg_states(database_url: str) -> dict[str, int]:
    with psycopg.connect(
        libpq_url(database_url), autocommit=True, application_name="mcpq-test-probe"
    ) as conn:
        rows = conn.execute(
            "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'mcpq-api' GROUP BY 1"
        ).fetchall()
    return {state: count for state, count in rows}


async def _assert_nothing_held(app: FastAPI, database_url: str) -> None:
    pool = app.state.engine.sync_engine.pool
    # Sample a few times across the held window, not just once.
    for _ in range(5):
        assert pool.checkedout() == 0, pool.status()
        states = await asyncio.to_thread(_pg_states, database_url)
        assert states.get("idle in transaction", 0) == 0, states
        assert states.get("active", 0) == 0, states
        await asyncio.sleep(0.05)


async def _held(backends: Backends, key: str) -> None:
    entered = await asyncio.to_thread(backends.gate(key).entered.wait, 10)
    assert entered, "the backend tool was never called"


async def test_no_connection_held_during_sync_call(
    app: FastAPI, client: httpx.AsyncClient, gateway: dict[str, Any], backends: Backends, database_url: str
) -> None:
    key = uuid.uuid4().hex
    backends.gate(key)
    call = asyncio.create_task(
        client.post(
            f"/v1/tools/{gateway['name']}.hold/call", json={"arguments": {"key": key}, "timeout_s": 30}
        )
    )
    await _held(backends, key)
    assert not call.done()
    await _assert_nothing_held(app, database_url)
    backends.gate(key).release()
    response = await call
    assert response.status_code == 200, response.text
    assert response.json()["result"]["content"][0]["text"] == f"released {key}"


async def test_no_connection_held_during_long_poll(
    app: FastAPI, client: httpx.AsyncClient, gateway: dict[str, Any], backends: Backends, database_url: str
) -> None:
    key = uuid.uuid4().hex
    backends.gate(key)
    submitted = await client.post(f"/v1/tools/{gateway['name']}.hold/jobs", json={"arguments": {"key": key}})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    await _held(backends, key)
    poll = asyncio.create_task(client.get(f"/v1/jobs/{job_id}", params={"wait": 30}))
    for _ in range(100):  # until the long-poll is waiting (a busy machine may take a while)
        if app.state.ctx.queue.waiting >= 1:
            break
        await asyncio.sleep(0.05)
    assert not poll.done()
    assert app.state.ctx.queue.waiting >= 1
    await _assert_nothing_held(app, database_url)
    backends.gate(key).release()
    response = await poll
    assert response.status_code == 200
    assert response.json()["status"] == "completed"


async def test_no_connection_held_with_a_team_token(
    app: FastAPI, client: httpx.AsyncClient, backends: Backends, database_url: str
) -> None:
    """With auth on: a team member's token, not yet cached, is looked up in its own short session,
    closed before the handler runs; nothing stays checked out while the call is held."""
    team = (await client.post("/v1/teams", json={"name": unique("inv")})).json()
    try:
        gateway = await client.post(
            "/v1/gateways", json={"name": unique(), "url": backends.urls["stateful"], "team": team["id"]}
        )
        assert gateway.status_code == 201, gateway.text
        token = await client.post("/v1/tokens", json={"name": "m", "team": team["id"], "role": "member"})
        auth = {"Authorization": f"Bearer {token.json()['token']}"}
        key = uuid.uuid4().hex
        backends.gate(key)
        call = asyncio.create_task(
            client.post(
                f"/v1/tools/{gateway.json()['name']}.hold/call",
                json={"arguments": {"key": key}, "timeout_s": 30},
                headers=auth,
            )
        )
        await _held(backends, key)
        await _assert_nothing_held(app, database_url)
        backends.gate(key).release()
        response = await call
        assert response.status_code == 200, response.text
    finally:
        await client.delete(f"/v1/teams/{team['id']}")


async def test_probe_sees_a_held_transaction(database_url: str) -> None:
    """The probe above can fail: a transaction left open is visible as idle in transaction."""
    conn = await psycopg.AsyncConnection.connect(libpq_url(database_url), application_name="mcpq-api")
    try:
        await conn.execute("SELECT 1")  # opens a transaction and leaves it open
        states = await asyncio.to_thread(_pg_states, database_url)
        assert states.get("idle in transaction", 0) == 1, states
    finally:
        await conn.close()
