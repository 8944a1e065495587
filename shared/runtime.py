"""Process-level setup for the API and worker processes: the event loop and the garbage collector."""

from __future__ import annotations

import asyncio
import gc

import uvloop


def use_uvloop() -> None:
    """Make the event loops this process creates from now on uvloop's (as uvicorn already does
    for the API). Call it before the worker builds its loop: arq's Worker gets its loop from the
    policy when it is constructed."""
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def freeze_heap() -> None:
    """Once startup is done: move every object alive now (modules, classes, settings, pools)
    out of the collector's sight, so no later collection walks them again. Measured with the
    API and worker code loaded and an app built: 176k tracked objects, a full collection took
    123 ms before and ~0 ms after (on a loaded 2-core box); such pauses showed at p99."""
    gc.collect()
    gc.freeze()
