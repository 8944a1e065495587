"""Our arq worker: one script claims due jobs, one script ends each, and a push wakes it.

arq's own loop picks a job up with WATCH, EXISTS, ZSCORE and three MULTI pipelines, and every
worker races for every job. This subclass keeps arq's data (job format, queue, in-progress lock,
try counter, result key, abort set, `max_tries` per function) so arq tooling still reads the
queue, but replaces the loop: `JobStore.claim` takes every due job it has room for in one
script, and `JobStore.finish` records the outcome and ends the arq job in one more.

It also beats (so a live worker hands a dead one's jobs on within seconds), drains on SIGTERM,
rides out Redis blips, and keeps results it could not write until Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from asyncio import FIRST_COMPLETED
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import arq.worker
from arq.connections import ArqRedis
from arq.jobs import deserialize_job_raw, serialize_result
from arq.utils import timestamp_ms
from arq.worker import Function, JobExecutionFailed, func
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import runtime
from shared.batching import GroupCommit
from shared.config import Settings
from shared.gateways.breaker import Breaker
from shared.gateways.channels import gone_channel
from shared.jobs.schemas import Envelope, JobKind
from shared.jobs.store import CANCELLED_ERROR, ArqEnd, Claim, JobEnd, JobStore
from shared.redis import job_deserializer, job_serializer, run_guarded, stop_task, subscribe_forever
from shared.security import SecretBox
from shared.subscriptions import SubscriptionStore
from workers.breaker import GatewayHealth
from workers.follow import CatalogNotices
from workers.progress import ProgressWriter
from workers.sessions import SessionPool
from workers.state import WorkerState, new_worker_id
from workers.subscriptions import SubscriptionHolder
from workers.tasks import (
    call_tool,
    complete,
    discover,
    failure,
    get_prompt,
    read_resource,
    subscribe_resource,
)
from workers.wake import take_wake_tokens

log = logging.getLogger("mcpq.worker")

FUNCTIONS = [
    func(call_tool, name=JobKind.CALL_TOOL.value, max_tries=3),
    func(discover, name=JobKind.DISCOVER.value, max_tries=2),
    func(read_resource, name=JobKind.READ_RESOURCE.value, max_tries=3),
    func(get_prompt, name=JobKind.GET_PROMPT.value, max_tries=3),
    func(complete, name=JobKind.COMPLETE.value, max_tries=3),
    func(subscribe_resource, name=JobKind.SUBSCRIBE_RESOURCE.value, max_tries=3),
]

# Jobs claimed per round trip: a burst drains quickly, and a second worker woken by the same
# burst still finds some.
CLAIM_BATCH = 50
# Most jobs ended per round trip: those that end while one finish is in flight go out together.
FINISH_BATCH = 32
# Results kept in memory while Redis is away; past it the oldest is dropped (and logged).
PENDING_RESULTS_MAX = 10_000
REDIS_BACKOFF_S = (0.1, 5.0)
# What a Redis blip raises (connection refused or lost, timeouts, a server still loading its
# data): the worker waits it out instead of exiting.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


# A job's end: the envelope for our record, the value for arq's result, and arq's success flag.
Outcome = tuple[Envelope, Any, bool]


@dataclass(frozen=True)
class _Job:
    """A claimed job as arq serialized it."""

    name: str = "<unknown>"
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    enqueue_ms: int = 0
    job_try: int = 0


class Worker(arq.worker.Worker):
    def __init__(self, settings: Settings, redis: ArqRedis) -> None:
        super().__init__(
            FUNCTIONS,
            queue_name=settings.queue_name,
            redis_pool=redis,
            max_jobs=settings.worker_max_jobs,
            job_timeout=settings.job_timeout_s,
            keep_result=settings.result_ttl_s,
            poll_delay=settings.worker_fallback_poll_s,
            allow_abort_jobs=True,
            handle_signals=False,  # `python -m workers` installs its own: SIGTERM drains
            job_serializer=job_serializer,
            job_deserializer=job_deserializer,
            log_results=False,
        )
        self.settings = settings
        self.worker_id = new_worker_id()
        self.store = JobStore(redis, settings)
        self._finishes: GroupCommit[JobEnd, bool] = GroupCommit(
            self.store.finish_many, FINISH_BATCH, alone_on=(ResponseError,)
        )
        self._wake = asyncio.Event()
        self._aborts_requested = False
        self._stopping = False
        self._hurry = False  # a second stop signal: hand running jobs back without waiting
        self._pending: deque[tuple[str, Envelope, ArqEnd]] = deque(maxlen=PENDING_RESULTS_MAX)
        self._pending_added = asyncio.Event()
        self._pending_written = asyncio.Event()
        self._unreturned = 0  # jobs this worker could not hand back; its lapsed beat will
        # A claim whose reply was lost may have claimed jobs no task runs: look after the blip.
        self._claims_uncertain = False
        self.progress = ProgressWriter(self.store)
        self._missed: set[asyncio.Task[None]] = set()  # look-ups of answers pub/sub may have lost

    # -- lifecycle -----------------------------------------------------------------------------

    async def main(self) -> None:
        # arq logs every job's arguments at INFO; ours carry backend headers only encrypted, but
        # logs are no place for them either. Our tasks log what matters (failures) themselves.
        logging.getLogger("arq.worker").setLevel(logging.WARNING)
        # Workers decrypt backend headers; without MCPQ_SECRET_KEYS they refuse to start.
        progress = self.progress
        health = GatewayHealth(Breaker(self.pool, self.settings))
        notices = CatalogNotices(self.pool, self.settings)
        sessions = SessionPool(self.settings, SecretBox.from_settings(self.settings), health, notices.note)
        sessions.start()
        subscriptions = SubscriptionHolder(
            SubscriptionStore(self.pool, self.settings), self.store, sessions, self.settings, self.worker_id
        )
        state = WorkerState(self.settings, self.store, sessions, self.worker_id, progress, subscriptions)
        answers = state.answers
        self.ctx.update(redis=self.pool, state=state)
        channels: dict[str, Callable[[str], None]] = {
            self.store.wake_channel: self._abort_requested,
            subscriptions.store.channel: subscriptions.changed,
            self.store.answers_channel: answers.on_answer,
            # A gateway deleted or moved: its pooled sessions are closed, not left to idle out.
            gone_channel(self.settings): sessions.retire_gateway,
        }

        def reconnected() -> None:
            self._check_aborts()
            subscriptions.changed()
            self._missed.add(asyncio.create_task(answers.missed(self.store)))
            self._missed = {t for t in self._missed if not t.done()}

        background = [
            # Aborts and answers are broadcasts (only the runner can act), and so are changes of
            # the resource subscriptions wanted; after a reconnect, check them anyway. Not awaited
            # until subscribed: a worker starts while Redis is away, and waits for it.
            asyncio.create_task(
                run_guarded("pub/sub", lambda: subscribe_forever(self.pool, channels, reconnected))
            ),
            asyncio.create_task(run_guarded("subscriptions", subscriptions.check_forever)),
            asyncio.create_task(
                run_guarded(
                    "wake-tokens",
                    lambda: take_wake_tokens(self.pool, self.store.wake_list, self._wake, self._claim_room),
                )
            ),
            asyncio.create_task(run_guarded("heartbeat", self._beat_forever)),
            asyncio.create_task(run_guarded("progress", progress.flush_forever)),
            asyncio.create_task(run_guarded("pending-results", self._write_pending_forever)),
        ]
        log.info("worker %s on queue %s, up to %d jobs", self.worker_id, self.queue_name, self.max_jobs)
        runtime.freeze_heap()
        try:
            await self._claim_forever()
            await self._drain()
        finally:
            for task in background:
                await stop_task(task)
            await subscriptions.close()
            await sessions.close()
            await notices.close()
        if not self._pending and not self._unreturned:
            with contextlib.suppress(*REDIS_DOWN):
                await self.store.leave(self.worker_id)

    def stop(self) -> None:
        """SIGTERM: take no new jobs, let running ones finish for `worker_drain_s`, then hand the
        rest back. A second signal hands them back at once."""
        if self._stopping:
            self._hurry = True
            for task in self.tasks.values():
                task.cancel()
            return
        log.info(
            "stopping: %d jobs running, waiting up to %.0f s", len(self.tasks), self.settings.worker_drain_s
        )
        self._stopping = True
        self._wake.set()

    async def close(self) -> None:
        self.stop()
        if self.main_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.main_task
        await self.pool.aclose()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.worker_drain_s
        while self.tasks and not self._hurry and loop.time() < deadline:
            # Running calls may still be cancelled on request while they finish.
            self._wake.clear()
            woken = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait(
                [*self.tasks.values(), woken], timeout=deadline - loop.time(), return_when=FIRST_COMPLETED
            )
            woken.cancel()
            if self._aborts_requested:
                self._aborts_requested = False
                with contextlib.suppress(RedisError, OSError):
                    await self._cancel_aborted_jobs()
        running = list(self.tasks.values())
        for task in running:
            task.cancel()  # past the grace period: each hands its job back
        await asyncio.gather(*running, return_exceptions=True)
        # A last chance for results Redis did not take; what stays unwritten is handed on by
        # another worker once this one's beat lapses (its jobs are still in its running set).
        if self._pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._pending_written.wait(), self.settings.worker_dead_after_s / 2)
        if self._pending:
            log.error(
                "%d results could not be written before exit; their jobs will be handed on",
                len(self._pending),
            )

    # -- claiming --------------------------------------------------------------------------------

    async def _claim_forever(self) -> None:
        backoff = REDIS_BACKOFF_S[0]
        while not self._stopping:
            self._wake.clear()  # cleared before the claim: a wake that arrives during it is kept
            try:
                if self._claims_uncertain:
                    await self._hand_back_orphans()
                    self._claims_uncertain = False
                await self._claim_due()
                if self._aborts_requested:
                    self._aborts_requested = False
                    await self._cancel_aborted_jobs()
            except (RedisError, OSError) as exc:  # also a failover's READONLY: wait, do not exit
                self._claims_uncertain = True
                log.warning("Redis unavailable (%s); retrying in %.1f s", exc, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, REDIS_BACKOFF_S[1])
                continue
            backoff = REDIS_BACKOFF_S[0]
            # Woken by a push (a new job, an abort, a freed slot); the poll is only a fallback.
            await self._sleep(self.poll_delay_s)

    async def _sleep(self, seconds: float) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps the wait in a task of its
        # own, one more task and one more loop turn between a wake-up and the claim.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    def _claim_room(self) -> int:
        """How many jobs the next claim may take."""
        return min(self.max_jobs - len(self.tasks), CLAIM_BATCH)

    async def _claim_due(self) -> None:
        room = self._claim_room()
        if room <= 0:
            return
        claims = await self.store.claim(self.worker_id, room)
        for claim in claims:
            task = asyncio.create_task(self._run(claim))
            self.tasks[claim.job_id] = self.job_tasks[claim.job_id] = task
            task.add_done_callback(partial(self._ended, claim.job_id))
        if len(claims) == CLAIM_BATCH:
            self._wake.set()  # there may be more due

    async def _hand_back_orphans(self) -> None:
        """Hand back jobs in this worker's running set that no task of it runs or holds a result for."""
        held = set(self.tasks) | {job_id for job_id, _, _ in self._pending}
        for job_id in set(await self.store.running(self.worker_id)) - held:
            log.warning(
                "job %s was claimed but not started (a reply lost to a Redis blip); handing it back", job_id
            )
            await self.store.hand_back(job_id, self.worker_id)

    def _ended(self, job_id: str, task: asyncio.Task[None]) -> None:
        was_full = len(self.tasks) >= self.max_jobs
        self.tasks.pop(job_id, None)
        self.job_tasks.pop(job_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("job %s crashed the worker's run", job_id, exc_info=task.exception())
        if was_full:
            self._wake.set()  # a slot is free: look for queued work now

    def _abort_requested(self, _: str) -> None:
        self._check_aborts()

    def _check_aborts(self) -> None:
        if self.tasks:
            self._aborts_requested = True
            self._wake.set()

    # -- running one job -------------------------------------------------------------------------

    async def _run(self, claim: Claim) -> None:
        """Run one claimed job and record its end, as arq's run_job would (minus its round trips)."""
        start_ms = timestamp_ms()
        job, runnable = self._read(claim)
        if isinstance(runnable, Function):
            envelope, value, success = await self._call(claim, job, runnable)
        else:
            envelope, value, success = runnable
        result = serialize_result(
            job.name,
            job.args,
            job.kwargs,
            job.job_try,
            job.enqueue_ms,
            success,
            value,
            start_ms,
            timestamp_ms(),
            f"{claim.job_id}:{job.name}",
            self.queue_name,
            job_id=claim.job_id,
            serializer=self.job_serializer,
        )
        # Shielded: a drain that gives up on this job must not cut its result off mid-write.
        await asyncio.shield(self._record(claim.job_id, envelope, result or b""))

    def _read(self, claim: Claim) -> tuple[_Job, Function | Outcome]:
        """The job as arq stored it, and its function, or why arq would not run it at all."""
        if claim.job is None:
            expired = failure("expired", "the job expired before a worker ran it")
            return _Job(job_try=claim.job_try), (expired, JobExecutionFailed("job expired"), False)
        try:
            name, args, kwargs, enqueue_try, enqueue_ms = deserialize_job_raw(
                claim.job, deserializer=self.job_deserializer
            )
        except Exception as exc:
            unreadable = failure("worker_error", f"the job could not be read: {exc}")
            return _Job(job_try=claim.job_try), (unreadable, exc, False)
        job = _Job(name, tuple(args), kwargs, enqueue_ms, max(claim.job_try, enqueue_try or 0))
        function = self.functions.get(name)
        if not isinstance(function, Function):
            missing = failure("worker_error", f"this worker has no job function {name!r}")
            return job, (missing, JobExecutionFailed(f"function {name!r} not found"), False)
        if claim.aborted:
            return job, ({"ok": False, "error": CANCELLED_ERROR}, asyncio.CancelledError(), False)
        max_tries = self.max_tries if function.max_tries is None else function.max_tries
        if job.job_try > max_tries:
            lost = failure(
                "worker_lost", f"its workers stopped {max_tries} times while running it; not tried again"
            )
            return job, (lost, JobExecutionFailed(f"max {max_tries} retries exceeded"), False)
        return job, function

    async def _call(self, claim: Claim, job: _Job, function: Function) -> Outcome:
        timeout_s = self.job_timeout_s if function.timeout_s is None else function.timeout_s
        try:
            async with asyncio.timeout(timeout_s) as limit:
                # The limit goes along: a job waiting for its caller's answer pauses it.
                ctx = {
                    **self.ctx,
                    "claim": claim,
                    "job_id": claim.job_id,
                    "job_try": job.job_try,
                    "limit": limit,
                }
                envelope: Envelope = await function.coroutine(ctx, *job.args, **job.kwargs)
            return envelope, envelope, True
        except asyncio.CancelledError as exc:
            if claim.job_id not in self.aborting_tasks:
                # Stopping: hand the job back; the next attempt decides (re-run if retry-safe).
                await self._hand_back(claim.job_id)
                raise
            self.aborting_tasks.discard(claim.job_id)
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()  # the abort is handled; later awaits in this task must work
            return {"ok": False, "error": CANCELLED_ERROR}, exc, False
        except TimeoutError as exc:
            return failure("timeout", f"the job ran past the worker's limit of {timeout_s:.0f}s"), exc, False
        except Exception as exc:  # job functions return envelopes; a bug must still end the job
            log.exception("job %s raised", claim.job_id)
            return failure("worker_error", f"{type(exc).__name__}: {exc}"), exc, False

    async def _hand_back(self, job_id: str) -> None:
        try:
            await self.store.hand_back(job_id, self.worker_id)
        except REDIS_DOWN as exc:
            self._unreturned += 1
            log.warning(
                "job %s not handed back (%s); it is handed on when this worker's beat lapses", job_id, exc
            )

    async def _record(self, job_id: str, envelope: Envelope, arq_result: bytes) -> None:
        # The job's last events go first: a waiter relaying them must not see them after the result.
        end = ArqEnd(arq_result, self.worker_id, await self.progress.settle(job_id))
        try:
            await self._finishes.submit((job_id, envelope, end))
        except REDIS_DOWN as exc:
            if len(self._pending) == self._pending.maxlen:
                log.error(
                    "result of job %s dropped: %d results already wait for Redis",
                    self._pending[0][0],
                    len(self._pending),
                )
            log.warning("result of job %s kept until Redis is back (%s)", job_id, exc)
            self._pending.append((job_id, envelope, end))
            self._pending_written.clear()
            self._pending_added.set()

    async def _write_pending_forever(self) -> None:
        backoff = REDIS_BACKOFF_S[0]
        while True:
            await self._pending_added.wait()
            while self._pending:
                job_id, envelope, end = self._pending[0]
                try:
                    await self.store.finish(job_id, envelope, end)
                except REDIS_DOWN:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
                    continue
                self._pending.popleft()
                backoff = REDIS_BACKOFF_S[0]
            log.info("results kept while Redis was away are written")
            self._pending_added.clear()
            self._pending_written.set()

    # -- liveness --------------------------------------------------------------------------------

    async def _beat_forever(self) -> None:
        """Beat every `worker_heartbeat_s`; hand on the jobs of workers whose beat lapsed.

        A worker reaps only after beating without a gap for `worker_dead_after_s` itself: after a
        Redis outage every beat looks old, and the others must get the chance to beat again.
        """
        loop = asyncio.get_running_loop()
        beating_since: float | None = None
        while True:
            try:
                now = loop.time()
                beating_since = now if beating_since is None else beating_since
                handed = await self.store.beat(
                    self.worker_id, now - beating_since >= self.settings.worker_dead_after_s
                )
                if handed:
                    log.warning("handed on %d jobs of workers whose beat lapsed", handed)
                    self._wake.set()
            except REDIS_DOWN as exc:
                beating_since = None
                log.warning("heartbeat failed (%s)", exc)
            await asyncio.sleep(self.settings.worker_heartbeat_s)
