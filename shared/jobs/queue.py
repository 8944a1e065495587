"""The one queue API: submit a prepared job, run it (submit and await), read it, cancel it.

REST, the MCP front door and MCP Tasks all go through here; nothing else touches the job store
or the waiters. It touches Redis only, never the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from arq.connections import ArqRedis
from arq.constants import abort_jobs_ss
from arq.utils import timestamp_ms
from opentelemetry.trace import SpanKind
from redis.exceptions import RedisError, ResponseError

from shared import pagination, tracing
from shared.auth.schemas import Principal, Role
from shared.batching import GroupCommit
from shared.config import Settings
from shared.errors import (
    BackendUnavailable,
    BadRequest,
    Conflict,
    IdempotencyKeyReused,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    ValidationFailed,
)
from shared.ids import parse_uuid
from shared.jobs.interactive import Until, asking_beyond, check_answer
from shared.jobs.schemas import JobEvent, JobRecord, JobStatus, PreparedJob
from shared.jobs.store import Admission, JobStore
from shared.jobs.waiters import JobWaiters, JobWatch

log = logging.getLogger(__name__)

# How long DELETE waits for a running job's worker to confirm the cancellation.
CANCEL_CONFIRM_S = 5.0
# How many index entries a filtered listing reads per round trip.
RECENT_SCAN_BATCH = 100
# Most jobs enqueued per round trip: those submitted while one enqueue is in flight go together.
ENQUEUE_BATCH = 32
# What a caller over its team's in-flight limit is told to wait before trying again.
RETRY_AFTER_S = 1

# Receives each event of a running job, in order (shared/jobs/schemas.py JobEvent).
EventSink = Callable[[JobEvent], Awaitable[None]]
# How long a job's last events may take to reach a caller once the job has ended (a client that
# stopped reading must not hold the handler for ever).
RELAY_DRAIN_S = 5.0
# Is asked a job's new questions ({key: question}) and returns their answers ({key: answer}).
InputSink = Callable[[dict[str, Any]], Awaitable[dict[str, dict[str, Any]]]]


def _not_found(job_id: str) -> NotFound:
    # The same answer whether the job never existed, has expired or belongs to another team.
    return NotFound(f"job {job_id} not found (unknown, expired, or not your team's)")


def _position(cursor: str) -> tuple[int, str]:
    """A GET /v1/jobs cursor: the (created ms, job id) of the last job of the previous page."""
    created, job_id = pagination.decode_values(cursor, 2)
    if not isinstance(created, int) or not isinstance(job_id, str):
        raise BadRequest("invalid cursor")
    return created, job_id


def authorize(principal: Principal, record: JobRecord) -> None:
    owner = parse_uuid(record.team) if record.team else None
    try:
        principal.authorize(owner, Role.MEMBER, f"job {record.id}")
    except NotFound:
        raise _not_found(record.id) from None


class JobQueue:
    def __init__(self, redis: ArqRedis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._store = JobStore(redis, settings)
        self._enqueues: GroupCommit[PreparedJob, Admission] = GroupCommit(
            self._store.enqueue_many, ENQUEUE_BATCH, alone_on=(ResponseError,)
        )
        self._waiters = JobWaiters(self._store, settings.fallback_poll_s)

    # --- what the process's one pub/sub reader delivers ------------------------------------------

    @property
    def channels(self) -> dict[str, Callable[[str], None]]:
        """The channels this queue listens to, with their handlers (see shared.redis.start_subscriber)."""
        return {
            self._store.done_channel: self._waiters.on_done,
            self._store.events_channel: self._waiters.on_events,
        }

    def reconnected(self) -> None:
        """Pushes may have been missed while the subscriber was disconnected: re-check every wait."""
        self._waiters.wake_all()

    # --- submit and await ------------------------------------------------------------------------

    async def submit(self, job: PreparedJob) -> JobRecord:
        """Enqueue; 429 if the job's team has its limit of jobs in flight, 503 if the queue is
        full. With an idempotency key already used by the team, the job that key names (422 if
        it was asked with another request)."""
        try:
            with tracing.span(
                "mcpq.enqueue",
                kind=SpanKind.PRODUCER,
                attributes={"mcpq.job.id": job.id, "mcpq.job.kind": job.kind.value, "mcpq.item": job.item},
            ):
                # The worker's span continues this one: its context travels in the payload.
                trace_context = tracing.carrier()
                if trace_context is not None:
                    job.payload["trace"] = trace_context
                admission = await self._enqueues.submit(job)
            if admission.outcome == "duplicate" and admission.same_request and admission.existing:
                existing = await self._store.get(admission.existing)
                if existing is None:
                    raise NotFound(f"job {admission.existing}, which this Idempotency-Key named, has expired")
                return existing
        except RedisError as exc:
            log.warning("enqueue of %s failed: %s", job.id, exc)
            raise ServiceUnavailable(
                "the job queue is unavailable; try again", headers={"Retry-After": str(RETRY_AFTER_S)}
            ) from exc
        if admission.record is not None:
            return admission.record
        if admission.outcome == "team_full":
            raise TooManyRequests(
                f"the team already has {self.settings.team_max_in_flight} jobs queued or running",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        if admission.outcome == "breaker_open":
            gateway = job.payload["backend"]["gateway"]
            wait = max(1, math.ceil(admission.retry_after_s))
            raise BackendUnavailable(
                f"the backend of gateway {gateway!r} keeps failing ({self.settings.breaker_failures} "
                f"transport failures in a row): calls are refused without being queued; the next "
                f"one in {wait} s probes it",
                headers={"Retry-After": str(wait)},
            )
        if admission.outcome == "queue_full":
            raise ServiceUnavailable(
                f"the queue is full ({self.settings.queue_max_jobs} jobs queued or running); try again",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        raise IdempotencyKeyReused(
            f"the Idempotency-Key was already used for another request (job {admission.existing}); "
            "use a new key for a new request"
        )

    async def run(
        self,
        job: PreparedJob,
        wait_s: float,
        *,
        on_event: EventSink | None = None,
        cancel_if_abandoned: bool = False,
        until: Until | None = None,
        on_input: InputSink | None = None,
    ) -> JobRecord:
        """Submit and await the outcome (or `until`) for up to `wait_s`; the record may still be
        queued or running.

        `on_input` is asked each question the job's backend asks meanwhile, and its answers go
        back to the job, within the same wait.

        `on_event` receives the job's events (progress, backend logs) in order while it runs, the
        last of them before this returns. With `cancel_if_abandoned`,
        a caller that stops waiting (its task is cancelled: an MCP client cancelled its request or
        went away) cancels the job, so it does not run on unseen.
        """
        record: JobRecord | None
        async with self._waiters.watch(job.id) as watch, self._relay(job.id, on_event):
            record = await self.submit(job)
            if record.id == job.id:
                try:
                    record = await self._relay_input(watch, wait_s, until, on_input)
                except BaseException:
                    if cancel_if_abandoned:
                        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                            await self._request_cancel(job.id)
                    raise
        if record is not None and record.id != job.id:
            # An earlier request with the same idempotency key made the job: await that one.
            record = await self._await(record, wait_s, until)
        if record is None:
            raise NotFound(f"job {job.id} vanished")
        return record

    async def _relay_input(
        self, watch: JobWatch, wait_s: float, until: Until | None, on_input: InputSink | None
    ) -> JobRecord | None:
        """The wait of `run`: pending (just submitted), and with `on_input`, each new question is
        answered by it and the wait goes on."""
        if on_input is None:
            return await watch.wait(wait_s, pending=True, until=until)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        handled: set[str] = set()
        record = await watch.wait(wait_s, pending=True, until=asking_beyond(handled))
        while record is not None and (
            questions := {k: q for k, q in record.asking.items() if k not in handled}
        ):
            handled.update(questions)
            answers = await on_input(questions)
            outcome, detail = await self._store.answer(record.id, answers)
            if outcome != "ok":  # it ended, or its question timed out, meanwhile
                log.info("job %s: answers not taken (%s %s)", record.id, outcome, detail)
            record = await watch.wait(max(0.0, deadline - loop.time()), until=asking_beyond(handled))
        return record

    async def _await(self, record: JobRecord, wait_s: float, until: Until | None = None) -> JobRecord | None:
        """`record` once terminal (or `until`), or as it stands after `wait_s`."""
        if record.status.terminal or wait_s <= 0 or (until is not None and until(record)):
            return record
        async with self._waiters.watch(record.id) as watch:
            # Not pending: the read inside the watch catches an ending pushed before it began.
            return await watch.wait(wait_s, until=until)

    @contextlib.asynccontextmanager
    async def _relay(self, job_id: str, sink: EventSink | None) -> AsyncIterator[None]:
        """Hand the job's events to `sink` while the block runs, and those still waiting when it
        ends: a worker publishes a job's last events before its outcome, so once the outcome is
        known here they are in the feed, and they reach the caller before the result does."""
        if sink is None:
            yield
            return
        with self._waiters.events(job_id) as feed:

            async def forward() -> None:
                while (event := await feed.get()) is not None:
                    await sink(event)

            task = asyncio.create_task(forward())
            try:
                yield
            except BaseException:
                # The caller went away (or the wait failed): nobody to relay to.
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                raise
            feed.close()
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(task, RELAY_DRAIN_S)

    # --- read ---------------------------------------------------------------------------------------

    async def get(
        self,
        job_id: str,
        principal: Principal,
        wait_s: float = 0.0,
        until: Until | None = None,
        *,
        new_question: bool = False,
    ) -> JobRecord:
        """The job as `principal` may see it; with `wait_s`, long-poll until it is terminal (or
        `until` holds; or, with `new_question`, it asks something it had not asked when the wait
        began). The team is checked before any wait: another team's job answers 404 at once,
        like an unknown one."""
        record = await (self._store.get(job_id) if wait_s > 0 else self._store.reconcile(job_id))
        if record is None:
            raise _not_found(job_id)
        authorize(principal, record)
        if new_question:
            until = asking_beyond(set(record.asking))
        awaited = await self._await(record, wait_s, until)
        if awaited is None:
            raise _not_found(job_id)
        return awaited

    async def tasks(self, team: str, offset: int, limit: int) -> tuple[list[JobRecord], bool]:
        """The team's tool-call jobs, newest first, and whether more follow (MCP `tasks/list`)."""
        ids = await self._store.task_ids(team, offset, limit + 1)
        records = [r for r in await self._store.get_many(ids[:limit]) if r is not None]
        return records, len(ids) > limit

    async def recent(
        self,
        principal: Principal,
        statuses: frozenset[JobStatus] = frozenset(),
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        """The newest jobs `principal` may see (its team's; every team's for the platform admin),
        newest first, only those in `statuses` if given, and the cursor of the next page.

        Viewers may not see jobs (the rule of `authorize`): 403. The scan reads the index in
        batches and stops at a full page, so a filter that matches little reads at most the
        index's RECENT_JOBS_KEPT records.
        """
        if principal.team_id is not None:
            principal.authorize(principal.team_id, Role.MEMBER, "the team's jobs")
        key = self._store.recent_key(None if principal.platform else str(principal.team_id))
        position = _position(cursor) if cursor else None
        found: list[JobRecord] = []
        while True:
            batch = await self._store.recent_ids(key, position, max(limit, RECENT_SCAN_BATCH))
            records = await self._store.get_many([job_id for _, job_id in batch])
            for entry, record in zip(batch, records, strict=True):
                position = entry
                if record is not None and (not statuses or record.status in statuses):
                    found.append(record)
                    if len(found) == limit:
                        return found, pagination.encode(list(position))
            if len(batch) < max(limit, RECENT_SCAN_BATCH):
                return found, None

    # --- answer a job's questions ---------------------------------------------------------------

    async def answer(self, job_id: str, principal: Principal, answers: dict[str, dict[str, Any]]) -> None:
        """Answer questions an input_required job asked ({key: {"result"} or {"error"}}): 404
        unknown, 409 not waiting for input, 422 a key it did not ask (or answered already)."""
        record = await self._store.get(job_id)
        if record is None:
            raise _not_found(job_id)
        authorize(principal, record)
        if not answers:
            raise ValidationFailed("no answers given")
        if record.status is JobStatus.INPUT_REQUIRED:
            for key, answer in answers.items():
                question = record.asking.get(key)
                if question is None:
                    raise ValidationFailed(
                        f"job {job_id} has no pending question {key!r} (answered already?)"
                    )
                check_answer(question, answer)
        outcome, detail = await self._store.answer(job_id, answers)
        if outcome == "missing":
            raise _not_found(job_id)
        if outcome == "not_waiting":
            raise Conflict(f"job {job_id} is {detail}, not waiting for input")
        if outcome == "unknown":
            raise ValidationFailed(f"job {job_id} has no pending question {detail!r} (answered already?)")

    # --- cancel -------------------------------------------------------------------------------------

    async def cancel(self, job_id: str, principal: Principal) -> JobRecord:
        """Cancel a queued job at once, or a running one (waiting briefly for its worker to stop
        it); 409 if it has already ended."""
        async with self._waiters.watch(job_id) as watch:
            record = await self._store.get(job_id)
            if record is None:
                raise _not_found(job_id)
            authorize(principal, record)
            if record.status.terminal:
                raise Conflict(f"job {job_id} is already {record.status.value}; nothing to cancel")
            state = await self._request_cancel(job_id)
            if state == "missing":
                raise _not_found(job_id)
            if state in (JobStatus.COMPLETED, JobStatus.FAILED):
                raise Conflict(f"job {job_id} has already {state}; nothing to cancel")
            record = await watch.wait(CANCEL_CONFIRM_S)
        if record is None:
            raise _not_found(job_id)
        return record

    async def _request_cancel(self, job_id: str) -> str:
        """Ask for a cancellation without waiting for it; returns the state the job was in."""
        state = await self._store.request_cancel(job_id)
        if state in (JobStatus.RUNNING, JobStatus.INPUT_REQUIRED):
            # arq's abort: the worker running it cancels the task, which cancels the backend call.
            await self.redis.zadd(abort_jobs_ss, {job_id: timestamp_ms()})
            await self.redis.publish(self._store.wake_channel, b"1")
        return state

    async def abandon(self, job_id: str) -> None:
        """Cancel a job whose caller gave up (no one to check: the caller made it)."""
        await self._request_cancel(job_id)

    # --- the queue as a whole -------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Requests in this process awaiting a job."""
        return self._waiters.waiting

    async def depth(self) -> int:
        """Jobs waiting for a worker."""
        return await self._store.queue_depth()

    async def running(self) -> int:
        """Jobs a worker is running."""
        return await self._store.running_count()

    async def ping(self) -> None:
        await self.redis.ping()

    async def broadcast(self, channel: str, message: bytes) -> None:
        """Publish to every API process (catalog changes, token revocations)."""
        await self.redis.publish(channel, message)
