"""A worker's report of call outcomes per gateway to the circuit breaker in Redis (which keeps the
gateway's last success and last error with it, for the API to show).

Calls report synchronously (`note`) and never wait on Redis: outcomes are folded per gateway and
written by one background write at a time. Failures are always written; successes only when
they change something this worker knows of (it reported failures since) or, at most once per
`RESET_REFRESH_S`, to reset failures other workers reported. So a busy healthy gateway costs one
Redis command per second per worker, and a Redis outage costs no call anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from redis.exceptions import RedisError

from shared.gateways.breaker import Breaker

log = logging.getLogger(__name__)

RESET_REFRESH_S = 1.0


@dataclass
class _Pending:
    reset: bool = False  # a success since the last write
    failures: int = 0  # failures after that success
    error: str = ""  # what the last of them said
    dirty: bool = False  # this worker has written failures that no success has cleared since
    last_reset: float = 0.0  # when this worker last wrote a success


class GatewayHealth:
    def __init__(self, breaker: Breaker) -> None:
        self._breaker = breaker
        self._pending: dict[str, _Pending] = {}
        self._writers: dict[str, asyncio.Task[None]] = {}

    def note(self, gateway_id: str, *, ok: bool, error: str = "") -> None:
        pending = self._pending.get(gateway_id)
        if pending is None:
            pending = self._pending[gateway_id] = _Pending()
        if ok:
            recently = time.monotonic() - pending.last_reset < RESET_REFRESH_S
            if recently and not (pending.dirty or pending.failures):
                return
            pending.reset, pending.failures = True, 0
        else:
            pending.failures += 1
            pending.error = error or "the backend could not be reached"
        if gateway_id not in self._writers:
            self._writers[gateway_id] = asyncio.create_task(self._write(gateway_id, pending))

    async def _write(self, gateway_id: str, pending: _Pending) -> None:
        try:
            while pending.reset or pending.failures:
                reset, failures = pending.reset, pending.failures
                pending.reset, pending.failures = False, 0
                if reset:
                    pending.last_reset = time.monotonic()
                pending.dirty = failures > 0 or (pending.dirty and not reset)
                try:
                    await self._breaker.record_outcomes(
                        gateway_id, reset=reset, failures=failures, error=pending.error[:1000]
                    )
                except (RedisError, OSError) as exc:
                    # Best effort: the breaker is advice; a call must not fail because it is away.
                    log.warning("circuit breaker for gateway %s not updated: %s", gateway_id, exc)
                    return
        finally:
            del self._writers[gateway_id]

    async def close(self) -> None:
        """Let the writes under way finish (bounded), so a worker's last outcomes are not lost."""
        writers = list(self._writers.values())
        if writers:
            await asyncio.wait(writers, timeout=2)
