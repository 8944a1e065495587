"""Waiters and workers are woken by a push, not by the fixed poll; unpushed endings still resolve."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from shared.auth.schemas import PLATFORM_ADMIN
from shared.config import Settings
from shared.jobs.queue import JobQueue
from shared.jobs.schemas import BackendSpec, JobKind, JobStatus, PreparedJob, job_payload, new_job_id
from shared.jobs.store import JobStore
from shared.redis import make_redis, start_subscriber, stop_task
from tests.backends import Backends
from tests.conftest import isolated, running_worker
from tests.jobs_helpers import plant_record
from workers.wake import take_wake_tokens


@contextlib.asynccontextmanager
async def job_queue(settings: Settings) -> AsyncIterator[JobQueue]:
    redis = make_redis(settings)
    queue = JobQueue(redis, settings)
    subscriber = await start_subscriber(redis, queue.channels, queue.reconnected)
    try:
        yield queue
    finally:
        await stop_task(subscriber)
        await redis.aclose()


def echo_job(backends: Backends, text: str) -> PreparedJob:
    backend: BackendSpec = {
        "gateway_id": "x",
        "gateway": "push",
        "url": backends.urls["stateless"],
        "transport": "streamable_http",
        "headers_enc": "",
        "timeout_s": 10,
    }
    payload = job_payload(backend, retry_safe=False, queue_ttl_s=60, tool="echo", arguments={"text": text})
    return PreparedJob(JobKind.CALL_TOOL, payload, "push.echo", None)


async def test_worker_is_woken_by_a_push_not_its_poll_delay(settings: Settings, backends: Backends) -> None:
    # A fixed poll would take up to 30 s per job.
    own = isolated(settings, fallback_poll_s=30.0, worker_fallback_poll_s=30.0)
    async with running_worker(own), job_queue(own) as queue:
        await asyncio.sleep(0.5)  # past the worker's first, immediate claim
        for i in range(3):
            started = time.monotonic()
            record = await queue.run(echo_job(backends, f"p{i}"), 20)
            assert record.status is JobStatus.COMPLETED, record
            assert time.monotonic() - started < 2.0
            await asyncio.sleep(0.2)


async def test_waiter_is_woken_by_the_push(settings: Settings) -> None:
    own = isolated(settings, fallback_poll_s=30.0)
    async with job_queue(own) as queue:
        job_id = new_job_id()
        await plant_record(queue.redis, own, job_id, JobKind.CALL_TOOL.value, "push.echo")
        store = JobStore(queue.redis, own)

        async def finish_later() -> None:
            await asyncio.sleep(0.2)
            await store.finish(job_id, {"ok": True, "result": {"isError": False, "content": []}})

        finisher = asyncio.create_task(finish_later())
        started = time.monotonic()
        record = await queue.get(job_id, PLATFORM_ADMIN, wait_s=20)
        await finisher
        assert record.status is JobStatus.COMPLETED
        assert time.monotonic() - started < 1.0  # the fallback check would take 30 s


async def test_job_no_worker_picks_up_ends_as_expired(settings: Settings, backends: Backends) -> None:
    own = isolated(settings, queue_ttl_s=1, fallback_poll_s=0.5)
    async with job_queue(own) as queue:  # no worker consumes this queue
        job_id = (await queue.submit(echo_job(backends, "lost"))).id
        record = await queue.get(job_id, PLATFORM_ADMIN, wait_s=5)
        assert record.status is JobStatus.FAILED
        assert record.error is not None and record.error["type"] == "expired"


@pytest.mark.parametrize(
    "arq_result",
    [
        ({"exception": "CancelledError", "message": ""}, JobStatus.CANCELLED, "cancelled"),
        (
            {"exception": "JobExecutionFailed", "message": "max 3 retries exceeded"},
            JobStatus.FAILED,
            "worker_error",
        ),
    ],
)
async def test_reconcile_folds_in_arq_results(
    settings: Settings, arq_result: tuple[dict[str, str], JobStatus, str]
) -> None:
    """A job that ended inside arq without our code running still reaches a terminal state."""
    from arq.constants import result_key_prefix

    from shared.redis import job_serializer

    exc, status, error_type = arq_result
    own = isolated(settings)
    async with job_queue(own) as queue:
        job_id = new_job_id()
        await plant_record(queue.redis, own, job_id, JobKind.CALL_TOOL.value, "push.echo")
        stored = {
            "t": 1,
            "f": "call_tool",
            "a": [],
            "k": {},
            "et": 0,
            "s": False,
            "r": exc,
            "st": 0,
            "ft": 0,
            "q": own.queue_name,
        }
        await queue.redis.set(result_key_prefix + job_id, job_serializer(stored), ex=60)
        record = await queue.get(job_id, PLATFORM_ADMIN)
        assert record.status is status
        assert record.error is not None and record.error["type"] == error_type


async def test_a_burst_of_wake_tokens_costs_one_pop_per_claim(settings: Settings) -> None:
    # One token per job; a worker takes as many as one claim can take jobs, in one pop.
    redis = make_redis(settings)
    wake_list = settings.key("test", "wake", new_job_id())
    pops = 0

    class CountingPops:
        async def blmpop(self, *args: Any, **kwargs: Any) -> Any:
            nonlocal pops
            pops += 1
            return await redis.blmpop(*args, **kwargs)

    await redis.lpush(wake_list, *["1"] * 30)  # type: ignore[misc]
    wake = asyncio.Event()
    taker = asyncio.create_task(take_wake_tokens(cast(Redis, CountingPops()), wake_list, wake, lambda: 20))
    try:
        await asyncio.wait_for(wake.wait(), 5)
        await asyncio.sleep(0.3)
        assert await redis.llen(wake_list) == 0  # type: ignore[misc]
        assert pops == 3  # 20 tokens, then 10, then a pop that blocks on the empty list
    finally:
        await stop_task(taker)
        await redis.delete(wake_list)
        await redis.aclose()
