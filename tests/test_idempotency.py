"""Idempotency-Key: a client's retry gets the job it already started, never a second run; and the
global queue cap answers 503 + Retry-After instead of growing without bound."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.backends import Backends


def _key() -> dict[str, str]:
    return {"Idempotency-Key": f"retry-{uuid.uuid4().hex}"}


async def test_the_same_key_returns_the_same_job_and_runs_it_once(
    client: httpx.AsyncClient, gateway: dict[str, Any], backends: Backends
) -> None:
    counter, headers = uuid.uuid4().hex, _key()
    url = f"/v1/tools/{gateway['name']}.count"
    body = {"arguments": {"key": counter}}
    first = await client.post(f"{url}/jobs", json=body, headers=headers)
    again = await client.post(f"{url}/jobs", json=body, headers=headers)
    assert first.status_code == again.status_code == 202, (first.text, again.text)
    job_id = first.json()["job_id"]
    assert again.json()["job_id"] == job_id
    # A synchronous retry with the same key (say, after the connection dropped) awaits that job.
    synced = await client.post(f"{url}/call", json=body, headers=headers)
    assert synced.status_code == 200, synced.text
    assert synced.json()["job_id"] == job_id
    assert synced.json()["result"]["structuredContent"] == {"result": 1}
    assert backends.counters[counter] == 1
    # Without a key, the same request is a new job.
    fresh = await client.post(f"{url}/call", json=body)
    assert fresh.json()["job_id"] != job_id
    assert backends.counters[counter] == 2


async def test_concurrent_retries_share_one_job(
    client: httpx.AsyncClient, gateway: dict[str, Any], backends: Backends
) -> None:
    counter, headers = uuid.uuid4().hex, _key()
    url = f"/v1/tools/{gateway['name']}.count/call"
    answers = await asyncio.gather(
        *(client.post(url, json={"arguments": {"key": counter}}, headers=headers) for _ in range(10))
    )
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["job_id"] for a in answers}) == 1
    assert backends.counters[counter] == 1


async def test_the_same_key_with_another_request_is_422(
    client: httpx.AsyncClient, gateway: dict[str, Any]
) -> None:
    headers = _key()
    url = f"/v1/tools/{gateway['name']}.echo/jobs"
    assert (await client.post(url, json={"arguments": {"text": "a"}}, headers=headers)).status_code == 202
    reused = await client.post(url, json={"arguments": {"text": "b"}}, headers=headers)
    assert reused.status_code == 422, reused.text
    assert reused.json()["error"] == "idempotency_key_reused"
    # Another kind of request with the key is another request too.
    read = await client.post(f"/v1/resources/{gateway['name']}:demo://readme/jobs", json={}, headers=headers)
    assert read.status_code == 422, read.text


@pytest.mark.parametrize("bad", ["", "x" * 256, "with space", "ünïcode"])
async def test_malformed_keys_are_422(client: httpx.AsyncClient, gateway: dict[str, Any], bad: str) -> None:
    # Headers travel as bytes: the non-ASCII key arrives as its UTF-8 bytes.
    response = await client.post(
        f"/v1/tools/{gateway['name']}.echo/jobs",
        json={"arguments": {"text": "a"}},
        headers=[(b"Idempotency-Key", bad.encode())],
    )
    assert response.status_code == 422, response.text


async def test_keys_are_per_team(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    """Another team reusing a key by chance gets its own job."""
    team = (await client.post("/v1/teams", json={"name": f"other-{uuid.uuid4().hex[:8]}"})).json()
    token = await client.post("/v1/tokens", json={"name": "m", "team": team["id"], "role": "member"})
    other = {"Authorization": f"Bearer {token.json()['token']}"}
    headers = _key()
    mine = await client.post(
        f"/v1/tools/{gateway['name']}.echo/jobs", json={"arguments": {"text": "a"}}, headers=headers
    )
    assert mine.status_code == 202, mine.text
    # The other team cannot see this private gateway at all: its call is a 404, not a hit on our key.
    theirs = await client.post(
        f"/v1/tools/{gateway['name']}.echo/jobs",
        json={"arguments": {"text": "a"}},
        headers={**headers, **other},
    )
    assert theirs.status_code == 404, theirs.text
    await client.delete(f"/v1/teams/{team['id']}")


async def test_a_full_queue_answers_503_with_retry_after(
    app: FastAPI,
    client: httpx.AsyncClient,
    gateway: dict[str, Any],
    backends: Backends,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = uuid.uuid4().hex
    gate = backends.gate(key)
    held = await client.post(f"/v1/tools/{gateway['name']}.hold/jobs", json={"arguments": {"key": key}})
    assert held.status_code == 202
    assert await asyncio.to_thread(gate.entered.wait, 10)
    monkeypatch.setattr(app.state.ctx.settings, "queue_max_jobs", 1)
    for path in ("call", "jobs"):
        refused = await client.post(
            f"/v1/tools/{gateway['name']}.echo/{path}", json={"arguments": {"text": "x"}}
        )
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "unavailable"
        assert "queue is full" in refused.json()["detail"]
        assert refused.headers["retry-after"] == "1"
    gate.release()
    done = await client.get(f"/v1/jobs/{held.json()['job_id']}", params={"wait": 10})
    assert done.json()["status"] == "completed"
    ok = await client.post(f"/v1/tools/{gateway['name']}.echo/call", json={"arguments": {"text": "x"}})
    assert ok.status_code == 200, ok.text
