"""Submit jobs, await them, read and cancel them. Touches Redis only, never the database."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss
from arq.utils import timestamp_ms
from redis.exceptions import RedisError

from shared.config import Settings
from shared.errors import Conflict, NotFound, ServiceUnavailable
from shared.jobs.schemas import JobKind, JobRecord, JobStatus
from shared.jobs.store import JobStore
from shared.jobs.waiters import JobWaiters

log = logging.getLogger(__name__)

# How long DELETE waits for a running job's worker to confirm the cancellation.
CANCEL_CONFIRM_S = 5.0


def new_job_id() -> str:
    # Fresh random ids: arq never trims its abort set, so a reused id could be aborted before it starts.
    return uuid.uuid4().hex


class JobQueue:
    def __init__(self, redis: ArqRedis, store: JobStore, waiters: JobWaiters, settings: Settings) -> None:
        self.redis = redis
        self.store = store
        self.waiters = waiters
        self.settings = settings

    async def submit(self, kind: JobKind, payload: dict[str, Any], tool: str | None) -> str:
        job_id = str(payload["job_id"])
        try:
            await self.store.enqueue(job_id, kind.value, tool, payload)
        except RedisError as exc:
            log.warning("enqueue of %s failed: %s", job_id, exc)
            raise ServiceUnavailable("the job queue is unavailable; try again") from exc
        return job_id

    async def run(self, kind: JobKind, payload: dict[str, Any], tool: str | None, wait_s: float) -> JobRecord:
        """Submit and await the outcome for up to `wait_s`; the record may still be queued or running."""
        job_id = str(payload["job_id"])
        async with self.waiters.watch(job_id) as watch:
            await self.submit(kind, payload, tool)
            record = await watch.wait(wait_s)
        if record is None:
            raise NotFound(f"job {job_id} vanished")
        return record

    async def get(self, job_id: str, wait_s: float = 0.0) -> JobRecord:
        if wait_s > 0:
            async with self.waiters.watch(job_id) as watch:
                record = await watch.wait(wait_s)
        else:
            record = await self.store.reconcile(job_id)
        if record is None:
            raise NotFound(f"job {job_id} not found (unknown, or its result has expired)")
        return record

    async def cancel(self, job_id: str) -> JobRecord:
        async with self.waiters.watch(job_id) as watch:
            state = await self.store.request_cancel(job_id)
            if state == "missing":
                raise NotFound(f"job {job_id} not found (unknown, or its result has expired)")
            if state in (JobStatus.COMPLETED, JobStatus.FAILED):
                raise Conflict(f"job {job_id} has already {state}; nothing to cancel")
            if state == JobStatus.RUNNING:
                # arq's abort: the worker running it cancels the task, which cancels the backend call.
                await self.redis.zadd(abort_jobs_ss, {job_id: timestamp_ms()})
                await self.redis.publish(self.store.wake_channel, b"1")
            record = await watch.wait(CANCEL_CONFIRM_S)
        if record is None:
            raise NotFound(f"job {job_id} not found")
        return record
