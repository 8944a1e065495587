"""Idle workers are woken by a push, not a fixed poll.

Each enqueued job pushes one token onto a wake list (see _ENQUEUE in shared/jobs/store.py);
an idle worker blocks on that list and wakes its claim loop when it gets one. One token wakes
one worker, so workers do not all rush at each job. tests/test_push.py checks that a worker
with a 30 s fallback poll still picks a job up at once.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)


async def take_wake_tokens(redis: Redis, wake_list: str, wake: asyncio.Event) -> None:
    """Block on the wake list; set `wake` for each token taken."""
    while True:
        try:
            if await redis.blpop([wake_list], timeout=5) is not None:  # type: ignore[misc]
                wake.set()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.warning("wake list unavailable (%s); relying on the fallback poll", exc)
            await asyncio.sleep(1)
