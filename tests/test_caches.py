"""The per-process cache shares one load among concurrent misses."""

from __future__ import annotations

import asyncio

import pytest

from shared.cache import TTLCache


async def test_concurrent_misses_share_one_load() -> None:
    cache: TTLCache[str, int] = TTLCache(10)
    loads = 0

    async def load() -> tuple[int, float | None]:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)
        return 42, None

    values = await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(100)))
    assert values == [42] * 100
    assert loads == 1
    assert await cache.get_or_load("k", load) == 42 and loads == 1  # now cached


async def test_a_failed_load_reaches_every_waiter_and_is_not_cached() -> None:
    cache: TTLCache[str, int] = TTLCache(10)
    loads = 0

    async def load() -> tuple[int, float | None]:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)
        raise LookupError("nope")

    results = await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, LookupError) for r in results)
    assert loads == 1
    with pytest.raises(LookupError):
        await cache.get_or_load("k", load)
    assert loads == 2
