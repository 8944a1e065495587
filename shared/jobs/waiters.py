"""Wake waiting callers by a push: one pub/sub subscription per API process, an event per waiter."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator

from shared.jobs.schemas import JobRecord
from shared.jobs.store import JobStore

MAX_FALLBACK_S = 15.0


class JobWaiters:
    """Waiters register an event per job id; the process's one subscriber calls `on_done`."""

    def __init__(self, store: JobStore, fallback_poll_s: float) -> None:
        self._store = store
        self._fallback_poll_s = fallback_poll_s
        self._events: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    @property
    def waiting(self) -> int:
        return sum(len(events) for events in self._events.values())

    def on_done(self, job_id: str) -> None:
        for event in self._events.get(job_id, ()):
            event.set()

    def wake_all(self) -> None:
        # After a (re)connect we may have missed messages: let every waiter re-read its record.
        for events in self._events.values():
            for event in events:
                event.set()

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[JobWatch]:
        """Register interest in `job_id`. Enter this before enqueueing, so no push is missed."""
        event = asyncio.Event()
        self._events[job_id].add(event)
        try:
            yield JobWatch(self._store, job_id, event, self._fallback_poll_s)
        finally:
            events = self._events.get(job_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._events[job_id]


class JobWatch:
    def __init__(self, store: JobStore, job_id: str, event: asyncio.Event, fallback_poll_s: float) -> None:
        self._store = store
        self._job_id = job_id
        self._event = event
        self._fallback_poll_s = fallback_poll_s

    async def wait(self, wait_s: float) -> JobRecord | None:
        """The record once terminal, or as it stands after `wait_s` seconds (None if unknown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        # The push is the fast path. The fallback check catches jobs that ended without one
        # (expired in the queue, aborted before start, a worker that died); it backs off, so
        # thousands of long waits do not turn into thousands of reads a second.
        fallback = self._fallback_poll_s
        while True:
            # Clear before reading: a push that lands during the read is then not lost.
            self._event.clear()
            record = await self._store.get(self._job_id)
            if record is None or record.status.terminal:
                return record
            remaining = deadline - loop.time()
            if remaining <= 0:
                return record
            try:
                await asyncio.wait_for(self._event.wait(), min(remaining, fallback))
            except TimeoutError:
                fallback = min(fallback * 2, MAX_FALLBACK_S)
                record = await self._store.reconcile(self._job_id)
                if record is None or record.status.terminal:
                    return record
