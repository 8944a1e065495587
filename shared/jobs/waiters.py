"""Wake waiting callers by a push: one pub/sub subscription per API process, an event per waiter."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Iterator

from redis.exceptions import RedisError

from shared.errors import ServiceUnavailable
from shared.jobs.interactive import Until
from shared.jobs.schemas import JobEvent, JobRecord
from shared.jobs.store import JobStore

log = logging.getLogger(__name__)

MAX_FALLBACK_S = 30.0
# Events a relaying caller may fall behind by before the oldest are coalesced away (EventFeed).
FEED_BACKLOG = 256
# What a caller whose wait ended during a Redis outage is told to wait before asking again.
UNAVAILABLE_RETRY_AFTER_S = 1


class JobWaiters:
    """Waiters register a watch per job id; the process's one subscriber calls `on_done`."""

    def __init__(self, store: JobStore, fallback_poll_s: float) -> None:
        self._store = store
        self._fallback_poll_s = fallback_poll_s
        self._watches: defaultdict[str, set[JobWatch]] = defaultdict(set)
        self._feeds: defaultdict[str, set[EventFeed]] = defaultdict(set)

    @property
    def waiting(self) -> int:
        return sum(len(watches) for watches in self._watches.values())

    def on_done(self, message: str) -> None:
        """A completion: the job id, then (small results) the whole record as JSON."""
        job_id, _, body = message.partition(" ")
        watches = self._watches.get(job_id)
        if not watches:  # every process hears every completion; most are someone else's
            return
        record = JobRecord.from_fields(json.loads(body)) if body else None
        for watch in watches:
            watch.wake(record)

    def on_events(self, message: str) -> None:
        """A worker's batch of job events: a line per event, the job id, then the event as JSON."""
        for line in message.split("\n"):
            job_id, _, body = line.partition(" ")
            feeds = self._feeds.get(job_id)
            if not feeds:  # most lines are jobs whose caller another API process serves
                continue
            event = json.loads(body)
            for feed in feeds:
                feed.put(event)

    @contextlib.contextmanager
    def events(self, job_id: str) -> Iterator[EventFeed]:
        """The events of `job_id` while the block runs (the MCP front door relays them)."""
        feed = EventFeed()
        self._feeds[job_id].add(feed)
        try:
            yield feed
        finally:
            feeds = self._feeds.get(job_id)
            if feeds is not None:
                feeds.discard(feed)
                if not feeds:
                    del self._feeds[job_id]

    def wake_all(self) -> None:
        # After a (re)connect we may have missed messages: let every waiter re-read its record.
        for watches in self._watches.values():
            for watch in watches:
                watch.wake(None)

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[JobWatch]:
        """Register interest in `job_id`. Enter this before enqueueing, so no push is missed."""
        watch = JobWatch(self._store, job_id, self._fallback_poll_s)
        self._watches[job_id].add(watch)
        try:
            yield watch
        finally:
            watches = self._watches.get(job_id)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[job_id]


class EventFeed:
    """A job's events in arrival order, for one relaying caller. A caller that reads slower than
    the backend reports falls behind: past FEED_BACKLOG events, the oldest progress report waiting
    is dropped (a newer one supersedes it), or, with none waiting, the oldest event."""

    def __init__(self) -> None:
        self._events: deque[JobEvent] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    def put(self, event: JobEvent) -> None:
        if len(self._events) >= FEED_BACKLOG:
            stale = next((e for e in self._events if e.get("type") == "progress"), self._events[0])
            self._events.remove(stale)
        self._events.append(event)
        self._ready.set()

    async def get(self) -> JobEvent | None:
        """The next event; None once the feed is closed and every event has been taken."""
        while not self._events:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._events.popleft()

    def close(self) -> None:
        """The job has ended: what is waiting now is the last."""
        self._closed = True
        self._ready.set()


class JobWatch:
    def __init__(self, store: JobStore, job_id: str, fallback_poll_s: float) -> None:
        self._store = store
        self._job_id = job_id
        self._fallback_poll_s = fallback_poll_s
        self._event = asyncio.Event()
        self._pushed: JobRecord | None = None

    def wake(self, record: JobRecord | None) -> None:
        self._pushed = record
        self._event.set()

    async def wait(
        self, wait_s: float, *, pending: bool = False, until: Until | None = None
    ) -> JobRecord | None:
        """The record once terminal (or `until` holds), or as it stands after `wait_s` seconds
        (None if unknown).

        `pending`: the caller knows the job is not terminal yet and registered this watch before
        learning so (it has just enqueued it, or read it since), so the first read is skipped:
        any push since then has set the event already.

        Redis going away does not end the wait: reads are retried until the deadline (the
        subscriber's reconnect wakes every watch, so a Redis that returns in time is noticed at
        once). Still away at the deadline: 503 naming the job, which may yet finish.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        # The push is the fast path. The fallback check catches jobs that ended without one
        # (expired in the queue, aborted before start, a worker that died). It costs one round
        # trip and backs off, so thousands of long waits stay cheap.
        fallback = self._fallback_poll_s
        record: JobRecord | None = None
        if not pending:
            # Clear before reading: a push that lands during the read is then not lost.
            self._event.clear()
            record = await self._store.get(self._job_id)
            if record is None:
                return None
        while record is None or not (record.status.terminal or (until is not None and until(record))):
            remaining = deadline - loop.time()
            if remaining <= 0:
                # The status may have moved on (queued -> running) without a push: say how it is.
                return await self._final_read()
            try:
                async with asyncio.timeout(min(remaining, fallback)):
                    await self._event.wait()
            except TimeoutError:
                try:
                    if await self._store.needs_reconcile(self._job_id):
                        record = await self._store.reconcile(self._job_id)
                        if record is None:
                            return None
                except RedisError as exc:
                    log.info("job %s: Redis unavailable while waiting (%s); still waiting", self._job_id, exc)
                    continue  # keep the interval: look again soon rather than back off
                fallback = min(fallback * 2, MAX_FALLBACK_S)
                continue
            self._event.clear()
            pushed, self._pushed = self._pushed, None
            if pushed is not None:
                record = pushed
                continue
            try:
                record = await self._store.get(self._job_id)
            except RedisError as exc:
                log.info("job %s: Redis unavailable while waiting (%s); still waiting", self._job_id, exc)
                continue
            if record is None:
                return None
        return record

    async def _final_read(self) -> JobRecord | None:
        try:
            return await self._store.get(self._job_id)
        except RedisError as exc:
            raise ServiceUnavailable(
                f"the job queue is unavailable; job {self._job_id} was accepted and may still "
                f"finish: ask GET /v1/jobs/{self._job_id} again later",
                extra={"job_id": self._job_id},
                headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
            ) from exc
