"""The worker's scripts: claim, finish, hand back and beat keep arq's data as arq writes it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.jobs import Job, serialize_result
from arq.jobs import JobStatus as ArqJobStatus
from arq.utils import timestamp_ms

from shared.auth.schemas import PLATFORM_ADMIN
from shared.config import Settings
from shared.jobs.queue import JobQueue
from shared.jobs.schemas import JobStatus, new_job_id
from shared.jobs.store import ArqEnd, JobStore
from shared.redis import job_deserializer, job_serializer
from tests.backends import Backends
from tests.conftest import isolated, make_worker, running_worker
from tests.jobs_helpers import bare_job
from tests.test_push import echo_job, job_queue


@pytest.fixture
async def queue(settings: Settings) -> AsyncIterator[JobQueue]:
    async with job_queue(isolated(settings, worker_dead_after_s=1.0)) as own:
        yield own


async def _enqueue(store: JobStore, n: int) -> list[str]:
    ids = [new_job_id() for _ in range(n)]
    for job_id in ids:
        admission = await store.enqueue(bare_job(job_id))
        assert admission.outcome == "ok"
    return ids


async def test_two_workers_claim_disjoint_jobs(queue: JobQueue) -> None:
    redis = queue.redis
    store = JobStore(redis, queue.settings)
    ids = await _enqueue(store, 20)
    first, second = await asyncio.gather(store.claim("w1", 12), store.claim("w2", 12))
    assert len(first) + len(second) == 20
    assert {c.job_id for c in first}.isdisjoint({c.job_id for c in second})
    assert await store.claim("w3", 10) == []  # running jobs are out of the due range
    claim = first[0]
    assert claim.previous == "queued" and claim.attempts == 1 and claim.job_try == 1
    assert claim.job is not None and not claim.aborted
    record = await store.get(claim.job_id)
    assert record is not None and record.status is JobStatus.RUNNING and record.worker == "w1"
    assert await redis.exists(in_progress_key_prefix + claim.job_id)
    assert await redis.sismember(store.running_key("w1"), claim.job_id)  # type: ignore[misc]
    assert set(ids) == {c.job_id for c in first + second}


async def test_finish_writes_what_arq_writes(queue: JobQueue) -> None:
    redis = queue.redis
    store = JobStore(redis, queue.settings)
    [job_id] = await _enqueue(store, 1)
    [claim] = await store.claim("w1", 1)
    envelope = {"ok": True, "result": {"isError": False, "content": []}}
    result = serialize_result(
        "call_tool", (), {}, 1, 0, True, {"ok": True}, 0, 0, "ref", "q", job_id, serializer=job_serializer
    )
    assert result is not None
    assert await store.finish(job_id, envelope, ArqEnd(result, "w1"))  # type: ignore[arg-type]
    arq_job = Job(job_id, redis, _queue_name=queue.settings.queue_name, _deserializer=job_deserializer)
    assert await arq_job.status() is ArqJobStatus.complete  # arq tooling reads our result
    info = await arq_job.result_info()
    assert info is not None and info.success and info.result == {"ok": True}
    for key in (in_progress_key_prefix, retry_key_prefix, job_key_prefix):
        assert not await redis.exists(key + job_id)
    assert await redis.zscore(queue.settings.queue_name, job_id) is None
    assert not await redis.sismember(store.running_key("w1"), claim.job_id)  # type: ignore[misc]
    record = await store.get(job_id)
    assert record is not None and record.status is JobStatus.COMPLETED


async def test_hand_back_makes_the_job_due_and_the_next_claim_counts_it(queue: JobQueue) -> None:
    redis = queue.redis
    store = JobStore(redis, queue.settings)
    [job_id] = await _enqueue(store, 1)
    await store.claim("w1", 1)
    await store.hand_back(job_id, "w1")
    assert not await redis.exists(in_progress_key_prefix + job_id)
    [again] = await store.claim("w2", 1)
    assert (again.previous, again.attempts, again.job_try) == ("running", 2, 2)


async def test_a_lapsed_beat_hands_the_workers_jobs_on(queue: JobQueue) -> None:
    store = JobStore(queue.redis, queue.settings)
    [job_id] = await _enqueue(store, 1)
    await store.beat("doomed", reap=False)
    await store.claim("doomed", 1)
    assert await store.beat("alive", reap=True) == 0  # the doomed worker's beat is fresh
    await asyncio.sleep(1.2)  # past worker_dead_after_s
    assert await store.live_workers() == []
    assert await store.beat("alive", reap=True) == 1
    assert await store.live_workers() == ["alive"]
    [again] = await store.claim("alive", 5)
    assert again.job_id == job_id and again.previous == "running" and again.attempts == 2


async def test_abort_before_start_is_seen_by_the_claim(queue: JobQueue) -> None:
    redis = queue.redis
    store = JobStore(redis, queue.settings)
    [job_id] = await _enqueue(store, 1)
    await redis.zadd(abort_jobs_ss, {job_id: timestamp_ms()})
    [claim] = await store.claim("w1", 1)
    assert claim.aborted and await redis.zscore(abort_jobs_ss, job_id) is None


async def test_cancel_during_call_records_cancelled(settings: Settings, backends: Backends) -> None:
    own = isolated(settings)
    async with running_worker(own), job_queue(own) as jobs:
        key = uuid.uuid4().hex
        backends.gate(key)
        job = echo_job(backends, "x")
        job = replace(
            job, payload=job.payload | {"tool": "hold", "arguments": {"key": key}}, item="push.hold"
        )
        job_id = (await jobs.submit(job)).id
        assert await asyncio.to_thread(backends.gate(key).entered.wait, 10)
        started = time.monotonic()
        record = await jobs.cancel(job_id, PLATFORM_ADMIN)
        assert record.status is JobStatus.CANCELLED, record
        assert time.monotonic() - started < 2  # the abort is pushed, not polled
        arq_job = Job(job_id, jobs.redis, _queue_name=own.queue_name, _deserializer=job_deserializer)
        info = await arq_job.result_info()
        assert info is not None and not info.success  # arq's view: aborted (CancelledError)
        backends.gate(key).release()


async def test_a_draining_worker_still_cancels_on_request(settings: Settings, backends: Backends) -> None:
    own = isolated(settings)
    async with running_worker(own) as worker, job_queue(own) as jobs:
        key = uuid.uuid4().hex
        backends.gate(key)
        job = echo_job(backends, "x")
        job = replace(
            job, payload=job.payload | {"tool": "hold", "arguments": {"key": key}}, item="push.hold"
        )
        job_id = (await jobs.submit(job)).id
        assert await asyncio.to_thread(backends.gate(key).entered.wait, 10)
        worker.stop()  # SIGTERM: drains for up to worker_drain_s (30 s)
        record = await jobs.cancel(job_id, PLATFORM_ADMIN)
        assert record.status is JobStatus.CANCELLED, record
        backends.gate(key).release()


async def test_a_claim_whose_reply_was_lost_is_handed_back(settings: Settings, backends: Backends) -> None:
    own = isolated(settings)
    worker = make_worker(own)
    async with job_queue(own) as jobs:
        job = echo_job(backends, "orphan")
        job_id = (await jobs.submit(replace(job, payload=job.payload | {"retry_safe": True}))).id
        # The claim ran in Redis, but its reply never reached the worker (a connection blip).
        [lost] = await JobStore(jobs.redis, own).claim(worker.worker_id, 1)
        assert lost.job_id == job_id
        worker._claims_uncertain = True  # what the claim loop sets when a claim raised
        task = asyncio.create_task(worker.async_run())
        try:
            record = await jobs.get(job_id, PLATFORM_ADMIN, wait_s=10)
        finally:
            await worker.close()
            await task
        # Without the hand-back it would wait for arq's lock to expire (job timeout + 10 s).
        assert record.status is JobStatus.COMPLETED and record.attempts == 2, record
