"""A short-lived, per-process cache of resolved tools, so a hot call path skips the database.

Entries live `ttl_s` at most. Any catalog change (register, refresh, delete) is published on a
Redis channel and clears every API process's cache at once; the TTL bounds staleness if such a
message is lost.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from shared.tools.schemas import ResolvedTool


class ToolCache:
    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, ResolvedTool]] = OrderedDict()

    def get(self, ref: str) -> ResolvedTool | None:
        entry = self._entries.get(ref)
        if entry is None:
            return None
        expires, tool = entry
        if time.monotonic() > expires:
            del self._entries[ref]
            return None
        return tool

    def put(self, ref: str, tool: ResolvedTool) -> None:
        if self._ttl_s <= 0:
            return
        self._entries[ref] = (time.monotonic() + self._ttl_s, tool)
        self._entries.move_to_end(ref)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def clear(self, _message: str = "") -> None:
        self._entries.clear()
