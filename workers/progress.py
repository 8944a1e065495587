"""What a running job reports on its way: the backend's progress and log notifications, relayed
in order to whoever awaits the job, and its latest progress kept in the job's record.

Of a job someone relays live (an MCP call whose client asked for progress or logs: the payload's
`live_events`), every event is kept and published, in the order the backend sent it (coalescing
is the relaying end's choice: the MCP front door coalesces only for a client slower than the
backend); they go out as soon as some arrive, after a short window that gathers the others
arriving meanwhile (`window_s`), so a backend reporting in bursts costs a round trip per window,
not per event. Of the other jobs only the latest progress is kept, for the record, and written
every `interval_s`, unpublished. A worker writes the events of all its jobs in one pipeline
(and one PUBLISH).
A job's events are flushed before its outcome is recorded (`settle`, after any write already
under way), so none arrives after the result (a job nobody relays live has its latest progress
written by its finish instead, in the same round trip); on a Redis error they are kept, ahead
of newer ones, until a write succeeds.

Which job a backend notification belongs to: progress comes through the SDK's per-request
`progress_callback` (the SDK's own token, mapped to the job here). A log notification carries no
request id; streamable HTTP sends it on the call's own response stream, and the SDK's client
hands it to `logging_callback` in the context of the task that sent the request, so a context
variable set by the job (`CURRENT_CALL`) names it. A log that arrives outside any call (on the
session's standalone stream, or on transports with one stream for all: legacy SSE, stdio) has no
job and is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from mcp_types import LoggingMessageNotificationParams
from redis.exceptions import RedisError

from shared.jobs.schemas import JobEvent, at_least
from shared.jobs.store import JobStore, record_progress

log = logging.getLogger(__name__)

# Events of one job waiting to be written: past this many (a Redis outage, a backend flooding
# logs), the oldest are dropped. The newest, the final progress among them, are kept.
MAX_PENDING_EVENTS = 1000


@dataclass
class Pending:
    """A job's events not written yet; of a job nobody relays live, only its latest progress."""

    live: bool
    events: deque[JobEvent]

    @classmethod
    def new(cls, live: bool) -> Pending:
        return cls(live, deque(maxlen=MAX_PENDING_EVENTS if live else 1))


class ProgressWriter:
    def __init__(self, store: JobStore, window_s: float = 0.02, interval_s: float = 0.25) -> None:
        self._store = store
        self._window_s = window_s
        self._interval_s = interval_s
        self._pending: dict[str, Pending] = {}
        self._arrived = asyncio.Event()
        self._live_arrived = asyncio.Event()
        # One write at a time: a job's flush waits for a batch already under way, which may hold
        # its earlier events.
        self._writing = asyncio.Lock()

    def report(self, job_id: str, progress: dict[str, Any], *, live: bool) -> None:
        """A progress report ({"progress", "total", "message"})."""
        self._add(job_id, {"type": "progress", **progress}, live)

    def log(self, job_id: str, entry: dict[str, Any]) -> None:
        """A backend log entry ({"level", "data", "logger"}): only a live job's are kept."""
        self._add(job_id, {"type": "log", **entry}, True)

    def _add(self, job_id: str, event: JobEvent, live: bool) -> None:
        pending = self._pending.get(job_id)
        if pending is None:
            pending = self._pending[job_id] = Pending.new(live)
        pending.events.append(event)
        self._arrived.set()
        if live:
            self._live_arrived.set()

    async def settle(self, job_id: str) -> dict[str, Any] | None:
        """`job_id` is about to end. A live job's pending events are written now, so they reach its
        relays before its result; a job nobody relays live gets its latest progress back, for the
        finish to write in the finish's own round trip. Either waits for a write already under way, which
        may hold the job's earlier events."""
        async with self._writing:
            pending = self._pending.pop(job_id, None)
            if pending is None:
                return None
            if pending.live:
                await self._write({job_id: pending})
                return None
            return record_progress(pending.events[-1]) if pending.events[-1]["type"] == "progress" else None

    async def flush_forever(self) -> None:
        while True:
            await self._arrived.wait()
            # An event relayed live cuts the wait short; then the window gathers its fellows.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._live_arrived.wait()
                await asyncio.sleep(self._window_s)
            self._arrived.clear()
            self._live_arrived.clear()
            async with self._writing:
                batch, self._pending = self._pending, {}
                if batch:
                    await self._write(batch)

    async def _write(self, batch: dict[str, Pending]) -> None:
        try:
            await self._store.publish_events(
                {job_id: list(pending.events) for job_id, pending in batch.items()},
                live={job_id for job_id, pending in batch.items() if pending.live},
            )
        except RedisError as exc:
            # Relaying is advisory: the call goes on. Keep the events, ahead of any newer ones.
            log.warning("events of %d job(s) not written yet: %s", len(batch), exc)
            for job_id, newer in self._pending.items():
                batch.setdefault(job_id, Pending.new(newer.live)).events.extend(newer.events)
            self._pending = batch


@dataclass(frozen=True)
class CallRelay:
    """Where the backend notifications of one job's call go."""

    job_id: str
    writer: ProgressWriter
    # Someone relays the job's events as they come (an MCP client asked for progress or logs).
    live: bool
    # The least severe log level the caller relays; None: it relays no logs.
    log_level: str | None

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        """The SDK's per-request progress callback."""
        report = {"progress": progress, "total": total, "message": message}
        self.writer.report(self.job_id, report, live=self.live)

    def on_log(self, params: LoggingMessageNotificationParams) -> None:
        if self.log_level is not None and at_least(params.level, self.log_level):
            self.writer.log(
                self.job_id, {"level": params.level, "data": params.data, "logger": params.logger}
            )


# The call the current task is making: the SDK runs `logging_callback` in the context of the
# task that sent the request whose response stream carried the notification.
CURRENT_CALL: ContextVar[CallRelay | None] = ContextVar("mcpq_current_call", default=None)


@contextlib.contextmanager
def relaying(relay: CallRelay) -> Iterator[None]:
    """Route the backend notifications of the requests sent inside the block to `relay`."""
    token = CURRENT_CALL.set(relay)
    try:
        yield
    finally:
        CURRENT_CALL.reset(token)


def current_relay() -> CallRelay:
    """The relay of the job this task runs (inside `relaying`)."""
    relay = CURRENT_CALL.get()
    if relay is None:
        raise RuntimeError("no call is being relayed in this task")
    return relay


async def on_backend_log(params: LoggingMessageNotificationParams) -> None:
    """The `logging_callback` of every pooled backend session."""
    relay = CURRENT_CALL.get()
    if relay is not None:
        relay.on_log(params)
