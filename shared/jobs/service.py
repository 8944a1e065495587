"""Submit jobs, await them, read and cancel them. Touches Redis only, never the database."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss
from arq.utils import timestamp_ms
from redis.exceptions import RedisError

from shared.auth.schemas import Principal, Role
from shared.config import Settings
from shared.errors import Conflict, NotFound, ServiceUnavailable, TooManyRequests
from shared.jobs.schemas import JobKind, JobRecord, JobStatus
from shared.jobs.store import JobStore
from shared.jobs.waiters import JobWaiters

log = logging.getLogger(__name__)

# How long DELETE waits for a running job's worker to confirm the cancellation.
CANCEL_CONFIRM_S = 5.0
# What a caller over its team's in-flight limit is told to wait before trying again.
RETRY_AFTER_S = 1


def new_job_id() -> str:
    # 122 random bits: unguessable, and fresh (arq never trims its abort set, so a reused id
    # could be aborted before it starts).
    return uuid.uuid4().hex


def _not_found(job_id: str) -> NotFound:
    # The same answer whether the job never existed, has expired or belongs to another team.
    return NotFound(f"job {job_id} not found (unknown, expired, or not your team's)")


def authorize(principal: Principal, record: JobRecord) -> None:
    try:
        owner = uuid.UUID(record.team) if record.team else None
    except ValueError:
        owner = None
    try:
        principal.authorize(owner, Role.MEMBER, f"job {record.id}")
    except NotFound:
        raise _not_found(record.id) from None


class JobQueue:
    def __init__(self, redis: ArqRedis, store: JobStore, waiters: JobWaiters, settings: Settings) -> None:
        self.redis = redis
        self.store = store
        self.waiters = waiters
        self.settings = settings

    async def submit(
        self, kind: JobKind, payload: dict[str, Any], tool: str | None, team: str | None = None
    ) -> str:
        """Enqueue a job of `team`; 429 if the team already has its limit of jobs in flight."""
        job_id = str(payload["job_id"])
        try:
            admitted = await self.store.enqueue(job_id, kind.value, tool, payload, team)
        except RedisError as exc:
            log.warning("enqueue of %s failed: %s", job_id, exc)
            raise ServiceUnavailable("the job queue is unavailable; try again") from exc
        if not admitted:
            raise TooManyRequests(
                f"the team already has {self.settings.team_max_in_flight} jobs queued or running",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        return job_id

    async def run(
        self,
        kind: JobKind,
        payload: dict[str, Any],
        tool: str | None,
        wait_s: float,
        team: str | None = None,
    ) -> JobRecord:
        """Submit and await the outcome for up to `wait_s`; the record may still be queued or running."""
        job_id = str(payload["job_id"])
        async with self.waiters.watch(job_id) as watch:
            await self.submit(kind, payload, tool, team)
            record = await watch.wait(wait_s)
        if record is None:
            raise NotFound(f"job {job_id} vanished")
        return record

    async def get(self, job_id: str, principal: Principal, wait_s: float = 0.0) -> JobRecord:
        # Read first and check the team before any wait, so another team's job answers 404 at
        # once, exactly like an unknown one.
        record = await (self.store.get(job_id) if wait_s > 0 else self.store.reconcile(job_id))
        if record is None:
            raise _not_found(job_id)
        authorize(principal, record)
        if wait_s > 0 and not record.status.terminal:
            async with self.waiters.watch(job_id) as watch:
                record = await watch.wait(wait_s)
            if record is None:
                raise _not_found(job_id)
        return record

    async def request_cancel(self, job_id: str) -> str:
        """Ask for a cancellation without waiting for it; returns the state the job was in. The
        caller has checked who may do this."""
        state = await self.store.request_cancel(job_id)
        if state == JobStatus.RUNNING:
            # arq's abort: the worker running it cancels the task, which cancels the backend call.
            await self.redis.zadd(abort_jobs_ss, {job_id: timestamp_ms()})
            await self.redis.publish(self.store.wake_channel, b"1")
        return state

    async def cancel(self, job_id: str, principal: Principal) -> JobRecord:
        record = await self.store.get(job_id)
        if record is None:
            raise _not_found(job_id)
        authorize(principal, record)
        if record.status is JobStatus.CANCELLED:  # the store's cancel answers "cancelled" either way
            raise Conflict(f"job {job_id} is already cancelled; nothing to cancel")
        async with self.waiters.watch(job_id) as watch:
            state = await self.request_cancel(job_id)
            if state == "missing":
                raise _not_found(job_id)
            if state in (JobStatus.COMPLETED, JobStatus.FAILED):
                raise Conflict(f"job {job_id} has already {state}; nothing to cancel")
            record = await watch.wait(CANCEL_CONFIRM_S)
        if record is None:
            raise _not_found(job_id)
        return record
