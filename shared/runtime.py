"""Process-level setup for the API and worker processes: the event loop and the garbage collector."""

from __future__ import annotations

import asyncio
import gc

import uvloop


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop (as uvicorn already uses for the API): measured on the worker's MCP client
    path, 4.44-4.73 -> 3.44-3.64 ms of CPU per call."""
    return uvloop.new_event_loop()


def freeze_heap() -> None:
    """Once startup is done: move every object alive now (modules, classes, settings, pools)
    out of the collector's sight, so no later collection walks them again. Measured with the
    API and worker code loaded and an app built: 176k tracked objects, a full collection took
    123 ms before and ~0 ms after (on a loaded 2-core box); such pauses showed at p99."""
    gc.collect()
    gc.freeze()
