"""Progress reports of running jobs, coalesced: the latest of each job, written for all jobs at
once a few times a second.

A backend that reports progress every second, under 1000 concurrent calls, sent 1000 reports a
second, each its own Redis round trip (HSET + PUBLISH) from the worker and its own message to
every API process. Now a worker writes every `interval_s` one pipeline for all its jobs (an HSET
each, one PUBLISH of them all). A report superseded within the interval is dropped; the latest
never is: it is written at the next flush, kept on a Redis error until one succeeds, and flushed
before its job's outcome is recorded (`flush_job`), so it never arrives after the result.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import RedisError

from shared.jobs.store import JobStore

log = logging.getLogger(__name__)


class ProgressWriter:
    def __init__(self, store: JobStore, interval_s: float = 0.25) -> None:
        self._store = store
        self._interval_s = interval_s
        self._pending: dict[str, dict[str, Any]] = {}

    def report(self, job_id: str, progress: dict[str, Any]) -> None:
        self._pending[job_id] = progress

    async def flush_job(self, job_id: str) -> None:
        """Write `job_id`'s pending report now (its job is about to end)."""
        progress = self._pending.pop(job_id, None)
        if progress is not None:
            await self._write({job_id: progress})

    async def flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            if self._pending:
                batch, self._pending = self._pending, {}
                await self._write(batch)

    async def _write(self, batch: dict[str, dict[str, Any]]) -> None:
        try:
            await self._store.set_progress_many(batch)
        except RedisError as exc:
            # Progress is advisory: the call goes on. Keep each job's latest for the next flush,
            # unless a newer one came meanwhile.
            log.warning("progress of %d job(s) not written yet: %s", len(batch), exc)
            self._pending = batch | self._pending
