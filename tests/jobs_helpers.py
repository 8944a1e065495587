"""Test-only access to job records in Redis, for states the API cannot produce on demand."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from shared.config import Settings
from shared.jobs.schemas import JobKind, JobStatus, PreparedJob, utc_iso
from shared.jobs.store import JobStore


def store_of(app: FastAPI) -> JobStore:
    """A JobStore on the app's Redis and settings (tests read and move records with it)."""
    return JobStore(app.state.ctx.queue.redis, app.state.settings)


async def plant_record(
    redis: Redis, settings: Settings, job_id: str, kind: str, item: str, team: str | None = None
) -> None:
    """A queued job record with no arq job behind it: no worker will ever run it."""
    key = settings.key("job", job_id)
    await redis.hset(  # type: ignore[misc]
        key,
        mapping={
            "id": job_id,
            "kind": kind,
            "item": item,
            "team": team or "",
            "status": JobStatus.QUEUED.value,
            "created_at": utc_iso(),
            "created_ts": repr(time.time()),
            "attempts": "0",
        },
    )
    await redis.expire(key, 3600)


def bare_job(job_id: str, team: str | None = None) -> PreparedJob:
    """A tool-call job whose backend no test will reach: for tests of the queue's own scripts."""
    return PreparedJob(
        JobKind.CALL_TOOL,
        {
            "job_id": job_id,
            "backend": {"gateway_id": "none", "gateway": "t", "url": "http://127.0.0.1:9/mcp"},
        },
        "t.echo",
        team,
    )


async def next_message(pubsub: PubSub) -> dict[str, Any]:
    """The next message on `pubsub` (made with ignore_subscribe_messages=True): the subscription's
    own confirmation comes first, and reads as None."""
    for _ in range(50):
        message = await pubsub.get_message(timeout=0.1)
        if message is not None:
            return message
    raise AssertionError("no message within 5 s")
