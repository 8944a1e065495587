"""Idle workers are woken by a push, not a fixed poll.

Each enqueued job pushes one token onto a wake list (see _ENQUEUE in shared/jobs/store.py);
an idle worker blocks on that list and wakes its claim loop when it gets tokens. A worker takes
at most as many tokens as one claim can take jobs (BLMPOP ... COUNT), so a burst of jobs costs
one pop per claim, not one per job, and the tokens it leaves wake the other workers: workers do
not all rush at each job. tests/test_push.py checks that a worker with a 30 s fallback poll
still picks a job up at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)


async def take_wake_tokens(
    redis: Redis, wake_list: str, wake: asyncio.Event, room: Callable[[], int]
) -> None:
    """Block on the wake list; set `wake` whenever tokens are taken, up to `room()` at a time
    (at least one: a worker with no room takes one, as its claim finds nothing to do)."""
    while True:
        try:
            # redis-py types each key of the varargs as a list, and the result as not awaitable.
            taken = await redis.blmpop(5, 1, wake_list, direction="LEFT", count=max(1, room()))  # type: ignore[misc, arg-type]
            if taken is not None:
                wake.set()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.warning("wake list unavailable (%s); relying on the fallback poll", exc)
            await asyncio.sleep(1)
