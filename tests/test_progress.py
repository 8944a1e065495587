"""A job's events (progress, backend logs) are all written, in order, for all jobs in one round
trip; none is lost (kept across a Redis error, flushed before the job's outcome); logs below the
caller's level are dropped."""

from __future__ import annotations

import asyncio
import json
import uuid

from mcp_types import LoggingMessageNotificationParams

from shared.config import Settings
from shared.jobs.schemas import JobKind, JobStatus
from shared.jobs.store import ArqEnd, JobStore
from shared.redis import make_redis
from tests.backends import free_port
from tests.conftest import isolated
from tests.jobs_helpers import next_message, plant_record
from workers.progress import CallRelay, ProgressWriter


async def test_every_event_of_each_job_is_written_in_order_in_one_message(settings: Settings) -> None:
    own = isolated(settings)
    redis = make_redis(own)
    store = JobStore(redis, own)
    jobs = [uuid.uuid4().hex for _ in range(2)]
    for job_id in jobs:
        await plant_record(redis, own, job_id, JobKind.CALL_TOOL.value, "p.sleep")
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(store.events_channel)
    writer = ProgressWriter(store, window_s=0.05)
    flusher = asyncio.create_task(writer.flush_forever())
    relay = CallRelay(jobs[0], writer, live=True, log_level="warning")
    try:
        for i in range(5):
            await relay.on_progress(i, 5, f"step {i}")
            relay.on_log(LoggingMessageNotificationParams(level="info", data=f"info {i}"))  # below: dropped
            relay.on_log(LoggingMessageNotificationParams(level="error", data=f"error {i}"))
        writer.report(jobs[1], {"progress": 1, "total": 2, "message": None}, live=True)
        message = await next_message(pubsub)
        lines = [line.split(" ", 1) for line in message["data"].decode().split("\n")]
        assert {job_id for job_id, _ in lines} == set(jobs)  # one message, both jobs
        first = [json.loads(body) for job_id, body in lines if job_id == jobs[0]]
        expected = []
        for i in range(5):
            expected.append({"type": "progress", "progress": i, "total": 5, "message": f"step {i}"})
            expected.append({"type": "log", "level": "error", "data": f"error {i}", "logger": None})
        assert first == expected
        record = await store.get(jobs[0])
        assert record is not None and record.progress == {"progress": 4, "total": 5, "message": "step 4"}
    finally:
        flusher.cancel()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()


async def test_events_survive_redis_errors_ahead_of_newer_ones(settings: Settings) -> None:
    own = isolated(settings)
    down = own.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    gone = make_redis(down)
    job_id = uuid.uuid4().hex
    writer = ProgressWriter(JobStore(gone, down))
    writer.report(job_id, {"progress": 1, "total": 3, "message": None}, live=True)
    await writer.settle(job_id)  # Redis refuses: the report is kept, not dropped
    writer.report(job_id, {"progress": 2, "total": 3, "message": None}, live=True)
    await gone.aclose()
    # Redis is back (here: the real one): settle writes both, the kept one first.
    redis = make_redis(own)
    store = JobStore(redis, own)
    await plant_record(redis, own, job_id, JobKind.CALL_TOOL.value, "p.sleep")
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(store.events_channel)
    writer._store = store
    try:
        assert await writer.settle(job_id) is None  # a live job's events are written, not handed back
        message = await next_message(pubsub)
        events = [json.loads(line.split(" ", 1)[1]) for line in message["data"].decode().split("\n")]
        assert [e["progress"] for e in events] == [1, 2]
        record = await store.get(job_id)
        assert record is not None and record.progress == {"progress": 2, "total": 3, "message": None}
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()


async def test_a_job_nobody_relays_live_only_updates_its_record(settings: Settings) -> None:
    """No relaying caller (REST, or an MCP call without progressToken or log level): the latest
    progress is written to the record every interval, nothing is published, logs are dropped."""
    own = isolated(settings)
    redis = make_redis(own)
    store = JobStore(redis, own)
    job_id = uuid.uuid4().hex
    await plant_record(redis, own, job_id, JobKind.CALL_TOOL.value, "p.sleep")
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(store.events_channel)
    writer = ProgressWriter(store, interval_s=0.05)
    flusher = asyncio.create_task(writer.flush_forever())
    relay = CallRelay(job_id, writer, live=False, log_level=None)
    try:
        for i in range(5):
            await relay.on_progress(i, 5, None)
            relay.on_log(LoggingMessageNotificationParams(level="error", data="dropped"))
        for _ in range(50):
            record = await store.get(job_id)
            if record is not None and record.progress is not None:
                break
            await asyncio.sleep(0.02)
        assert record is not None and record.progress == {"progress": 4, "total": 5, "message": None}
        for _ in range(5):  # the subscription's confirmation reads as None too: look past it
            assert await pubsub.get_message(timeout=0.05) is None
    finally:
        flusher.cancel()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()


async def test_the_last_progress_of_a_job_nobody_relays_is_written_by_its_finish(settings: Settings) -> None:
    """Ending a job costs no round trip of its own for its last progress: `settle` hands it to the
    finish, which writes it into the record before publishing the outcome."""
    own = isolated(settings)
    redis = make_redis(own)
    store = JobStore(redis, own)
    job_id = uuid.uuid4().hex
    await plant_record(redis, own, job_id, JobKind.CALL_TOOL.value, "p.sleep")
    writer = ProgressWriter(store, interval_s=60)  # no periodic write during the test
    relay = CallRelay(job_id, writer, live=False, log_level=None)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(store.done_channel)
    try:
        for i in range(3):
            await relay.on_progress(i + 1, 3, "step")
        final = await writer.settle(job_id)
        assert final == {"progress": 3, "total": 3, "message": "step"}
        assert await writer.settle(job_id) is None  # handed over once
        before = await store.get(job_id)
        assert before is not None and before.progress is None  # not written on its own
        ended = ArqEnd(b"r", "w1", final)
        assert await store.finish(job_id, {"ok": True, "result": {"content": []}}, ended)
        record = await store.get(job_id)
        assert record is not None and record.progress == final and record.status is JobStatus.COMPLETED
        message = await next_message(pubsub)
        published = json.loads(message["data"].decode().split(" ", 1)[1])
        assert json.loads(published["progress"]) == final  # waiters see it with the outcome
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()
