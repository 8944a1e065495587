"""Progress reports are coalesced per job and written for all jobs in one round trip; the latest
is never lost (kept across a Redis error, flushed before the job's outcome)."""

from __future__ import annotations

import asyncio
import json
import uuid

from shared.config import Settings
from shared.jobs.schemas import JobKind
from shared.jobs.store import JobStore
from shared.redis import make_redis
from tests.backends import free_port
from tests.conftest import isolated
from tests.jobs_helpers import plant_record
from workers.progress import ProgressWriter


async def test_the_latest_report_of_each_job_is_written_in_one_message(settings: Settings) -> None:
    own = isolated(settings)
    redis = make_redis(own)
    store = JobStore(redis, own)
    jobs = [uuid.uuid4().hex for _ in range(2)]
    for job_id in jobs:
        await plant_record(redis, own, job_id, JobKind.CALL_TOOL.value, "p.sleep")
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(store.progress_channel)
    writer = ProgressWriter(store, interval_s=0.05)
    flusher = asyncio.create_task(writer.flush_forever())
    try:
        for i in range(5):
            writer.report(jobs[0], {"progress": i, "total": 5, "message": f"step {i}"})
        writer.report(jobs[1], {"progress": 1, "total": 2, "message": None})
        message = None
        for _ in range(50):  # the subscription's own confirmation comes first (as None)
            message = await pubsub.get_message(timeout=0.1)
            if message is not None:
                break
        assert message is not None
        lines = message["data"].decode().split("\n")
        assert sorted(line.split(" ", 1)[0] for line in lines) == sorted(jobs)  # one message, both jobs
        first = next(line for line in lines if line.startswith(jobs[0]))
        assert json.loads(first.split(" ", 1)[1])["progress"] == 4  # the superseded four are dropped
        record = await store.get(jobs[0])
        assert record is not None and record.progress == {"progress": 4, "total": 5, "message": "step 4"}
    finally:
        flusher.cancel()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()


async def test_a_report_survives_redis_errors_and_is_flushed_before_the_outcome(settings: Settings) -> None:
    own = isolated(settings)
    down = own.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    gone = make_redis(down)
    job_id = uuid.uuid4().hex
    writer = ProgressWriter(JobStore(gone, down))
    writer.report(job_id, {"progress": 1, "total": 3, "message": None})
    await writer.flush_job(job_id)  # Redis refuses: the report is kept, not dropped
    writer.report("other", {"progress": 9, "total": 9, "message": None})
    await gone.aclose()
    # Redis is back (here: the real one): the kept report is what flush_job writes.
    redis = make_redis(own)
    store = JobStore(redis, own)
    await plant_record(redis, own, job_id, JobKind.CALL_TOOL.value, "p.sleep")
    writer._store = store
    await writer.flush_job(job_id)
    record = await store.get(job_id)
    assert record is not None and record.progress == {"progress": 1, "total": 3, "message": None}
    await redis.aclose()
