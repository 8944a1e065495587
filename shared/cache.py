"""A short-lived, bounded, per-process cache. Resolved tools and authenticated tokens use it.

Entries live `ttl_s` at most (less if `put` says so). Owners clear entries when Redis tells
every process that what they were built from changed; the TTL bounds staleness if such a
message is lost.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from time import monotonic
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._loading: dict[K, asyncio.Future[V]] = {}

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

    async def get_or_load(self, key: K, load: Callable[[], Awaitable[tuple[V, float | None]]]) -> V:
        """The cached value, or one `load` shared by every caller that misses at the same time.

        Without this, an entry expiring under load sends every concurrent request to the
        database at once (thousands of lookups for one token), and a small pool times out.
        `load` returns the value and an optional shorter TTL; its exception reaches all waiters.
        """
        value = self.get(key)
        if value is not None:
            return value
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value, ttl_s = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here; waiters re-raise it
            raise
        else:
            self.put(key, value, ttl_s)
            future.set_result(value)
            return value
        finally:
            del self._loading[key]

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self, _message: str = "") -> None:
        self._entries.clear()
