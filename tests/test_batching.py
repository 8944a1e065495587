"""Group commit: what is submitted during a round trip goes out together, each caller gets its own
answer, and grouped enqueues and finishes mean the same as one at a time."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import replace

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from shared.batching import GroupCommit
from shared.config import Settings
from shared.jobs.queue import JobQueue
from shared.jobs.schemas import JobStatus, new_job_id
from shared.jobs.store import ArqEnd, JobStore
from tests.conftest import isolated
from tests.jobs_helpers import bare_job, next_message
from tests.test_push import job_queue


class Flusher:
    """A flush that records its batches and holds the first one until released."""

    def __init__(self, fail: dict[int, Exception] | None = None) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail = fail or {}

    async def __call__(self, items: list[int]) -> Sequence[int]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            await self.release.wait()
        for item in items:
            if item in self.fail:
                raise self.fail[item]
        return [item * 10 for item in items]


async def test_items_submitted_during_a_round_trip_go_out_together() -> None:
    flush = Flusher()
    group: GroupCommit[int, int] = GroupCommit(flush, most=4)
    first = asyncio.create_task(group.submit(0))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert flush.batches == [[0]]  # alone, it went out at once: nothing waits to be grouped
    rest = [asyncio.create_task(group.submit(i)) for i in range(1, 7)]
    await asyncio.sleep(0)
    flush.release.set()
    assert await first == 0
    assert await asyncio.gather(*rest) == [10, 20, 30, 40, 50, 60]
    assert flush.batches == [[0], [1, 2, 3, 4], [5, 6]]  # at most `most` per round trip


async def test_a_refused_batch_is_sent_again_one_by_one() -> None:
    flush = Flusher(fail={2: ResponseError("bad item")})
    group: GroupCommit[int, int] = GroupCommit(flush, most=8, alone_on=(ResponseError,))
    first = asyncio.create_task(group.submit(0))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(group.submit(i)) for i in (1, 2, 3)]
    await asyncio.sleep(0)
    flush.release.set()
    assert await first == 0
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert results[0] == 10 and results[2] == 30
    assert isinstance(results[1], ResponseError)  # only the item Redis refused fails
    assert flush.batches == [[0], [1, 2, 3], [1], [2], [3]]


async def test_other_errors_fail_every_caller_of_the_batch() -> None:
    flush = Flusher(fail={1: RedisConnectionError("down")})
    group: GroupCommit[int, int] = GroupCommit(flush, most=8, alone_on=(ResponseError,))
    first = asyncio.create_task(group.submit(0))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(group.submit(i)) for i in (1, 2)]
    await asyncio.sleep(0)
    flush.release.set()
    assert await first == 0
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in results)
    assert flush.batches == [[0], [1, 2]]  # not retried: Redis is down for all of them alike
    assert await group.submit(5) == 50  # and the next call goes out again


async def test_an_item_whose_caller_gave_up_before_it_was_sent_is_not_sent() -> None:
    flush = Flusher()
    group: GroupCommit[int, int] = GroupCommit(flush, most=8)
    first = asyncio.create_task(group.submit(0))
    await asyncio.sleep(0)
    kept, dropped = asyncio.create_task(group.submit(1)), asyncio.create_task(group.submit(2))
    await asyncio.sleep(0)
    dropped.cancel()
    flush.release.set()
    assert (await first, await kept) == (0, 10)
    assert flush.batches == [[0], [1]]


async def test_grouped_enqueues_are_admitted_in_order_each_as_if_alone(settings: Settings) -> None:
    own = isolated(settings, team_max_in_flight=2)
    async with job_queue(own) as queue:
        store = JobStore(queue.redis, own)
        team = str(uuid.uuid4())
        key = f"k-{uuid.uuid4()}"
        first_keyed = replace(bare_job(new_job_id(), team), idempotency_key=key)
        same_key_again = replace(bare_job(new_job_id(), team), idempotency_key=key)
        over_limit = bare_job(new_job_id(), team)
        other_team = bare_job(new_job_id(), str(uuid.uuid4()))
        admissions = await store.enqueue_many(
            [first_keyed, same_key_again, bare_job(new_job_id(), team), over_limit, other_team]
        )
        assert [a.outcome for a in admissions] == ["ok", "duplicate", "ok", "team_full", "ok"]
        assert admissions[1].existing == first_keyed.id and admissions[1].same_request
        for job, admission in zip([first_keyed, other_team], [admissions[0], admissions[4]], strict=True):
            record = await store.get(job.id)
            assert record is not None and record.status is JobStatus.QUEUED
            assert admission.record is not None and admission.record.id == job.id
        assert await store.get(over_limit.id) is None and await store.get(same_key_again.id) is None
        assert await queue.redis.zscore(own.queue_name, over_limit.id) is None
        assert await queue.redis.zscore(own.queue_name, other_team.id) is not None


async def test_concurrent_submits_share_round_trips(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    enqueue_many = JobStore.enqueue_many

    async def counted(self: JobStore, jobs: Sequence[object]) -> object:
        batches.append(len(jobs))
        return await enqueue_many(self, jobs)  # type: ignore[arg-type]

    monkeypatch.setattr(JobStore, "enqueue_many", counted)
    own = isolated(settings)
    async with job_queue(own) as fresh:
        queue: JobQueue = fresh
        jobs = [bare_job(new_job_id()) for _ in range(40)]
        records = await asyncio.gather(*(queue.submit(job) for job in jobs))
        assert [r.id for r in records] == [j.id for j in jobs]
        assert sum(batches) == 40 and len(batches) < 40, batches
        store = JobStore(queue.redis, own)
        for job in jobs:
            record = await store.get(job.id)
            assert record is not None and record.status is JobStatus.QUEUED


async def test_grouped_finishes_end_each_job_once(settings: Settings) -> None:
    own = isolated(settings)
    async with job_queue(own) as queue:
        store = JobStore(queue.redis, own)
        ids = [new_job_id() for _ in range(3)]
        for job_id in ids:
            assert (await store.enqueue(bare_job(job_id))).outcome == "ok"
        claims = await store.claim("w1", 3)
        assert {c.job_id for c in claims} == set(ids)
        assert await store.request_cancel(ids[0]) in ("running", "cancelled")
        await store.finish(ids[0], {"ok": False, "error": {"type": "cancelled", "message": "cancelled"}})
        pubsub = queue.redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(store.done_channel)
        end = ArqEnd(b"arq-result", "w1")
        applied = await store.finish_many(
            [
                (ids[0], {"ok": True, "result": {"content": []}}, end),  # already ended
                (ids[1], {"ok": True, "result": {"content": [], "n": 1}}, end),
                (ids[2], {"ok": False, "error": {"type": "backend_error", "message": "no"}}, end),
            ]
        )
        assert applied == [False, True, True]
        statuses = [(await store.get(job_id)) for job_id in ids]
        assert [r.status if r else None for r in statuses] == [
            JobStatus.CANCELLED,
            JobStatus.COMPLETED,
            JobStatus.FAILED,
        ]
        assert statuses[1] is not None and statuses[1].result == {"content": [], "n": 1}
        assert statuses[2] is not None and statuses[2].error == {"type": "backend_error", "message": "no"}
        for job_id in ids:  # arq's side ended for every job, the already-ended one included
            assert await queue.redis.get(f"arq:result:{job_id}") == b"arq-result"
            assert await queue.redis.zscore(own.queue_name, job_id) is None
        assert not await queue.redis.smembers(store.running_key("w1"))  # type: ignore[misc]
        published = [(await next_message(pubsub))["data"].decode() for _ in range(2)]
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        job_id, record = published[0].split(" ", 1)
        assert job_id == ids[1] and json.loads(record)["status"] == "completed"
        assert published[1].split(" ", 1)[0] == ids[2]
