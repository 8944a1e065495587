"""The per-team limit on jobs in flight: admitted atomically at enqueue, released exactly once
by whichever path ends the job, and answered with 429 + Retry-After past the limit."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest
from arq.worker import Worker
from fastapi import FastAPI

from shared.config import Settings
from shared.jobs.store import JobStore
from tests.backends import Backends
from tests.conftest import unique
from tests.jobs_helpers import bare_job
from tests.test_push import isolated, job_queue


async def _enqueue(store: JobStore, team: str) -> tuple[str, bool]:
    job_id = uuid.uuid4().hex
    admitted = await store.enqueue(bare_job(job_id, team))
    return job_id, admitted.outcome == "ok"


async def test_admission_and_every_release_path(settings: Settings) -> None:
    own = isolated(settings, team_max_in_flight=2)
    async with job_queue(own) as queue:
        redis = queue.redis
        store = JobStore(redis, own)
        team = uuid.uuid4().hex
        slot = store.in_flight_key(team)
        first, ok1 = await _enqueue(store, team)
        second, ok2 = await _enqueue(store, team)
        _, ok3 = await _enqueue(store, team)
        assert (ok1, ok2, ok3) == (True, True, False)
        assert await store.get(_) is None  # a refused job leaves nothing behind
        _, other_team = await _enqueue(store, uuid.uuid4().hex)
        assert other_team  # the limit is per team

        # Finishing releases the slot, and finishing twice does not release a second one.
        assert await store.finish(first, {"ok": True, "result": {}})
        assert not await store.finish(first, {"ok": True, "result": {}})
        assert await redis.zcard(slot) == 1
        third, ok = await _enqueue(store, team)
        assert ok and await redis.zcard(slot) == 2

        # Cancelling a queued job releases its slot; cancelling again changes nothing.
        assert await store.request_cancel(second) == "cancelled"
        assert await store.request_cancel(second) == "cancelled"
        assert await redis.zcard(slot) == 1

        # A job that expires in the queue is released when reconcile folds the expiry in.
        await redis.hset(store._key(third), "created_ts", repr(time.time() - own.queue_ttl_s - 1))  # type: ignore[misc]
        record = await store.reconcile(third)
        assert record is not None and record.error is not None and record.error["type"] == "expired"
        assert await redis.zcard(slot) == 0


async def test_a_job_that_never_ends_ages_out(settings: Settings) -> None:
    own = isolated(settings, team_max_in_flight=1)
    async with job_queue(own) as queue:
        store = JobStore(queue.redis, own)
        team = uuid.uuid4().hex
        stuck, ok = await _enqueue(store, team)
        assert ok
        assert not (await _enqueue(store, team))[1]
        # As if its record had expired unread: the entry's score (its latest possible end) passes.
        await queue.redis.zadd(store.in_flight_key(team), {stuck: 1})
        assert (await _enqueue(store, team))[1]


async def test_jobs_without_a_team_are_not_counted(settings: Settings) -> None:
    own = isolated(settings, team_max_in_flight=1)
    async with job_queue(own) as queue:
        store = JobStore(queue.redis, own)
        assert all([(await _enqueue(store, ""))[1] for _ in range(3)])


@pytest.fixture
async def team_member(client: httpx.AsyncClient, backends: Backends, worker: Worker) -> Any:
    team = (await client.post("/v1/teams", json={"name": unique("busy")})).json()
    gateway = await client.post(
        "/v1/gateways", json={"name": unique(), "url": backends.urls["stateful"], "team": team["id"]}
    )
    assert gateway.status_code == 201, gateway.text
    token = await client.post("/v1/tokens", json={"name": "m", "team": team["id"], "role": "member"})
    yield gateway.json()["name"], {"Authorization": f"Bearer {token.json()['token']}"}
    await client.delete(f"/v1/teams/{team['id']}")


async def test_over_the_limit_is_429_with_retry_after(
    client: httpx.AsyncClient,
    app: FastAPI,
    backends: Backends,
    team_member: tuple[str, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app.state.ctx.settings, "team_max_in_flight", 1)
    gateway, auth = team_member
    key = uuid.uuid4().hex
    backends.gate(key)
    held = await client.post(f"/v1/tools/{gateway}.hold/jobs", json={"arguments": {"key": key}}, headers=auth)
    assert held.status_code == 202, held.text
    for path, body in (("jobs", {"arguments": {"text": "x"}}), ("call", {"arguments": {"text": "x"}})):
        refused = await client.post(f"/v1/tools/{gateway}.echo/{path}", json=body, headers=auth)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "too_many_requests"
        assert refused.headers["retry-after"] == "1"
    # The platform admin's call on the team's tool is the team's job too, and counts.
    platform = await client.post(f"/v1/tools/{gateway}.echo/call", json={"arguments": {"text": "p"}})
    assert platform.status_code == 429, platform.text

    assert await asyncio.to_thread(backends.gate(key).entered.wait, 10)
    backends.gate(key).release()
    done = await client.get(f"/v1/jobs/{held.json()['job_id']}", params={"wait": 10}, headers=auth)
    assert done.json()["status"] == "completed"
    again = await client.post(
        f"/v1/tools/{gateway}.echo/call", json={"arguments": {"text": "y"}}, headers=auth
    )
    assert again.status_code == 200, again.text
