"""The API's Redis pool: a burst on a busy loop waits for connections; a Redis that is down
answers at once. Against the run's Redis and a private redis-server this test starts and stops."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.config import Settings
from shared.redis import RedisUnreachable, make_redis
from tests.backends import free_port


async def test_burst_on_a_busy_loop_waits_for_connections(settings: Settings) -> None:
    narrow = settings.model_copy(
        update={"redis_max_connections": 5, "redis_pool_timeout_s": 20, "redis_connect_timeout_s": 0.05}
    )
    redis = make_redis(narrow)

    async def request(i: int) -> bytes | None:
        # Each request's handler holds the loop for 2 ms, as a CPU-bound API does: 300 of them
        # delay every I/O completion, connects included, far past the 0.05 s connect timeout.
        time.sleep(0.002)  # noqa: ASYNC251 - blocking the loop is the point
        key = narrow.key("burst", str(i))
        await redis.set(key, str(i), ex=60)
        value: bytes | None = await redis.get(key)
        return value

    try:
        results = await asyncio.gather(*(request(i) for i in range(300)))
    finally:
        await redis.aclose()
    assert results == [str(i).encode() for i in range(300)]


@pytest.fixture
def private_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        pytest.skip("no redis-server binary")
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    yield f"redis://127.0.0.1:{port}/0", server
    server.terminate()
    server.wait(5)


async def test_redis_down_fails_every_request_within_a_second(
    settings: Settings, private_redis: tuple[str, subprocess.Popen[bytes]]
) -> None:
    url, server = private_redis
    redis = make_redis(settings.model_copy(update={"redis_url": url, "redis_max_connections": 10}))
    try:
        for _ in range(50):
            try:
                await redis.ping()
                break
            except RedisConnectionError:
                await asyncio.sleep(0.1)  # the server is still starting
        server.terminate()
        server.wait(5)
        started = time.monotonic()
        # Many more requests than connections: none queues behind the others' connect attempts.
        outcomes = await asyncio.gather(*(redis.ping() for _ in range(200)), return_exceptions=True)
        assert time.monotonic() - started < 1.0
        assert all(isinstance(o, RedisConnectionError) for o in outcomes), outcomes[:3]
        # A refused connect is remembered: the next requests fail without trying.
        again = await asyncio.gather(*(redis.ping() for _ in range(10)), return_exceptions=True)
        assert all(isinstance(o, RedisUnreachable) for o in again), again[:3]
    finally:
        await redis.aclose()
