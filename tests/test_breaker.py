"""The circuit breaker's Redis side (shared/gateways/breaker.py) and the worker's reports to it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from shared.config import Settings
from shared.gateways.breaker import Breaker, BreakerStatus, breaker_key
from shared.jobs.schemas import BackendSpec
from shared.security import SecretBox
from tests.backends import Backends
from tests.tcp_proxy import TcpProxy
from workers.breaker import GatewayHealth
from workers.sessions import SessionPool


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return settings.model_copy(update={"breaker_failures": 3, "breaker_open_s": 0.5})


def gateway() -> str:
    return str(uuid.uuid4())


async def test_closed_until_the_threshold_then_open(redis: Redis, fast: Settings) -> None:
    breaker, gw = Breaker(redis, fast), gateway()
    assert (await breaker.state(gw)).status is BreakerStatus.CLOSED
    for expected in (1, 2):
        state = await breaker.record(gw, ok=False)
        assert (state.failures, state.status) == (expected, BreakerStatus.CLOSED)
    state = await breaker.record(gw, ok=False)
    assert state.status is BreakerStatus.OPEN
    assert 0.4 < state.retry_after_s <= 0.5
    read = await breaker.state(gw)
    assert read.status is BreakerStatus.OPEN and read.failures == 3
    assert await redis.ttl(breaker_key(fast, gw)) > 0  # old counts lapse


async def test_success_resets_the_count(redis: Redis, fast: Settings) -> None:
    breaker, gw = Breaker(redis, fast), gateway()
    await breaker.record(gw, ok=False)
    await breaker.record(gw, ok=False)
    await breaker.record(gw, ok=True)
    # Two more failures are not five consecutive ones: still closed.
    await breaker.record(gw, ok=False)
    state = await breaker.record(gw, ok=False)
    assert (state.failures, state.status) == (2, BreakerStatus.CLOSED)


async def test_half_open_lets_one_probe_through_and_it_decides(redis: Redis, fast: Settings) -> None:
    breaker, gw = Breaker(redis, fast), gateway()
    await breaker.record(gw, ok=False, failures=3)
    assert not await breaker.claim_probe(gw)  # open: no probe yet
    await asyncio.sleep(0.55)
    assert (await breaker.state(gw)).status is BreakerStatus.HALF_OPEN
    claims = await asyncio.gather(*(breaker.claim_probe(gw) for _ in range(5)))
    assert claims.count(True) == 1
    # The probe failed: open again for the full time, and a later probe may go.
    state = await breaker.record(gw, ok=False)
    assert state.status is BreakerStatus.OPEN and state.retry_after_s > 0.4
    await asyncio.sleep(0.55)
    assert await breaker.claim_probe(gw)
    # The probe succeeded: closed, counting from zero.
    await breaker.record(gw, ok=True)
    state = await breaker.state(gw)
    assert (state.failures, state.open_until, state.status) == (0, 0.0, BreakerStatus.CLOSED)


def spec_for(port: int, gateway_id: str) -> BackendSpec:
    return {
        "gateway_id": gateway_id,
        "gateway": "breaker",
        "url": f"http://127.0.0.1:{port}/mcp",
        "transport": "streamable_http",
        "headers_enc": "",
        "timeout_s": 10,
    }


async def test_worker_reports_transport_failures_and_recovery(
    redis: Redis, fast: Settings, backends: Backends
) -> None:
    breaker, gw = Breaker(redis, fast), gateway()
    port = urlsplit(backends.urls["stateless"]).port
    assert port is not None
    proxy = TcpProxy(port)
    await proxy.start()
    pool = SessionPool(fast, SecretBox.from_settings(fast), GatewayHealth(Breaker(redis, fast)))
    try:
        up = spec_for(proxy.port, gw)
        await pool.use(up, lambda c: c.call_tool("echo", {"text": "up"}))
        proxy.cut_all()
        await proxy.refuse()  # the backend is gone
        for _ in range(3):
            with pytest.raises(ConnectionError):
                await pool.use(up, lambda c: c.call_tool("echo", {"text": "down"}))
        await asyncio.sleep(0.1)  # reports are written in the background
        assert (await breaker.state(gw)).status is BreakerStatus.OPEN
        # Back: one success closes the circuit for everyone.
        await proxy.start()
        await pool.use(spec_for(proxy.port, gw), lambda c: c.call_tool("echo", {"text": "back"}))
        await asyncio.sleep(0.1)
        assert (await breaker.state(gw)).failures == 0
    finally:
        await pool.close()
        await proxy.close()
