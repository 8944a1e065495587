"""Wake the arq worker by a push instead of a fixed sleep.

arq's main loop is `async for _ in poll(poll_delay): await self._poll_iteration()`, and `poll`
just sleeps. The `arq` CLI builds arq's own `Worker`, so we cannot subclass it; instead we
replace that one sleep: the loop now waits until it is woken (a job was enqueued, an abort was
requested, a job finished and freed a slot) or `poll_delay` passes, whichever comes first.
`poll_delay` thereby becomes a slow fallback, not the latency floor.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator

import arq.worker

_events: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Event] = weakref.WeakKeyDictionary()


def wake_event() -> asyncio.Event:
    loop = asyncio.get_running_loop()
    event = _events.get(loop)
    if event is None:
        event = _events[loop] = asyncio.Event()
    return event


def wake() -> None:
    wake_event().set()


async def wakeable_poll(step: float = 0.5) -> AsyncGenerator[float, None]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    event = wake_event()
    while True:
        yield loop.time() - start
        try:
            await asyncio.wait_for(event.wait(), step)
        except TimeoutError:
            pass
        # Cleared after the wait: a wake that arrives while the loop polls is kept for the next turn.
        event.clear()


def install() -> None:
    # Guarded by tests/test_worker_wake.py, which fails if arq's loop stops using this name.
    arq.worker.poll = wakeable_poll  # type: ignore[attr-defined]
