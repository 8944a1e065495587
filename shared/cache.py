"""A short-lived, bounded, per-process cache. Resolved tools and authenticated tokens use it.

Entries live `ttl_s` at most (less if `put` says so). Owners clear entries when Redis tells
every process that what they were built from changed; the TTL bounds staleness if such a
message is lost.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from time import monotonic
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if monotonic() > expires:
            del self._entries[key]
            return None
        return value

    def put(self, key: K, value: V, ttl_s: float | None = None) -> None:
        """Keep `value` for the cache's TTL, or for `ttl_s` if that is shorter."""
        ttl = self._ttl_s if ttl_s is None else min(ttl_s, self._ttl_s)
        if ttl <= 0:
            return
        self._entries[key] = (monotonic() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self, _message: str = "") -> None:
        self._entries.clear()
