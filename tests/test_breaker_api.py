"""The circuit breaker as callers see it: a gateway whose backend keeps failing answers 503 +
Retry-After at once, without enqueueing; one probe decides when the open time is over; the state
shows on the gateway and in /metrics."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from arq.worker import Worker
from fastapi import FastAPI

from shared.gateways.breaker import breaker_key
from tests.backends import Backends
from tests.conftest import TEAM, instant
from tests.tcp_proxy import TcpProxy
from tests.test_metrics import scrape, value


@pytest.fixture
async def proxied(
    client: httpx.AsyncClient, backends: Backends, worker: Worker
) -> AsyncIterator[tuple[dict[str, Any], TcpProxy]]:
    """A gateway whose backend is reached through a proxy the test can take down."""
    port = urlsplit(backends.urls["stateless"]).port
    assert port is not None
    proxy = TcpProxy(port)
    await proxy.start()
    response = await client.post(
        "/v1/gateways",
        json={
            "name": f"flaky-{uuid.uuid4().hex[:8]}",
            "url": f"http://127.0.0.1:{proxy.port}/mcp",
            "team": TEAM,
        },
    )
    assert response.status_code == 201, response.text
    gateway: dict[str, Any] = response.json()
    yield gateway, proxy
    await proxy.close()
    await client.delete(f"/v1/gateways/{gateway['id']}")


async def test_an_open_circuit_refuses_at_once_then_one_probe_closes_it(
    app: FastAPI, client: httpx.AsyncClient, proxied: tuple[dict[str, Any], TcpProxy]
) -> None:
    gateway, proxy = proxied
    url = f"/v1/tools/{gateway['name']}.echo/call"
    body = {"arguments": {"text": "x"}}
    assert (await client.post(url, json=body)).status_code == 200
    assert (await client.get(f"/v1/gateways/{gateway['id']}")).json()["breaker"]["status"] == "closed"

    proxy.cut_all()
    await proxy.refuse()  # the backend is gone: each call fails in transport
    threshold = app.state.settings.breaker_failures
    statuses = []
    for _ in range(threshold):
        failed = await client.post(url, json=body)
        statuses.append(failed.status_code)
        assert failed.json()["error"] == "backend_unavailable", failed.text
    assert statuses == [502] * threshold
    await asyncio.sleep(0.3)  # the workers' reports are written in the background

    # Open: refused at once, with Retry-After, and nothing is queued.
    started = time.monotonic()
    refused = await client.post(url, json=body)
    assert time.monotonic() - started < 1.0
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "backend_unavailable"
    assert 1 <= int(refused.headers["retry-after"]) <= app.state.settings.breaker_open_s
    jobs = await client.post(f"/v1/tools/{gateway['name']}.echo/jobs", json=body)
    assert jobs.status_code == 503, jobs.text
    sick = (await client.get(f"/v1/gateways/{gateway['id']}")).json()
    shown = sick["breaker"]
    assert shown["status"] == "open" and shown["failures"] >= threshold and shown["retry_after_s"] > 0
    # What real calls saw, without calling: the last success (the first call) and the last error.
    assert sick["last_seen_ok_at"] is not None and instant(sick["last_error_at"]) > instant(
        sick["last_seen_ok_at"]
    )
    assert sick["last_error"].startswith(f"could not connect to 127.0.0.1:{proxy.port}")
    metrics = await scrape(client)
    assert value(metrics, "mcpq_gateway_breaker_open", gateway_id=gateway["id"]) == 1
    assert value(metrics, "mcpq_gateway_breaker_failures", gateway_id=gateway["id"]) >= threshold

    # The backend is back, and the open time is over (moved, not waited for): half open.
    await proxy.start()
    redis = app.state.ctx.queue.redis
    await redis.hset(breaker_key(app.state.settings, gateway["id"]), "open_until", "0")  # type: ignore[misc]
    assert (await client.get(f"/v1/gateways/{gateway['id']}")).json()["breaker"]["status"] == "half_open"
    hold = {"arguments": {"text": "probe"}}
    probe, other = await asyncio.gather(client.post(url, json=hold), client.post(url, json=hold))
    # Exactly one call is let through as the probe; it succeeds and closes the circuit.
    assert sorted([probe.status_code, other.status_code]) == [200, 503], (probe.text, other.text)
    await asyncio.sleep(0.3)
    healed = (await client.get(f"/v1/gateways/{gateway['id']}")).json()
    assert healed["breaker"]["status"] == "closed"
    assert instant(healed["last_seen_ok_at"]) > instant(
        healed["last_error_at"]
    )  # the error stays on show, older
    assert (await client.post(url, json=body)).status_code == 200


async def test_discovery_is_not_gated_by_the_breaker(
    app: FastAPI, client: httpx.AsyncClient, proxied: tuple[dict[str, Any], TcpProxy]
) -> None:
    """An admin refreshing a gateway whose circuit is open still reaches the backend."""
    gateway, _ = proxied
    key = breaker_key(app.state.settings, gateway["id"])
    redis = app.state.ctx.queue.redis
    await redis.hset(key, mapping={"failures": 99, "open_until": repr(time.time() + 60)})  # type: ignore[misc]
    try:
        call = await client.post(f"/v1/tools/{gateway['name']}.echo/call", json={"arguments": {"text": "x"}})
        assert call.status_code == 503, call.text
        refreshed = await client.post(f"/v1/gateways/{gateway['id']}/refresh")
        assert refreshed.status_code == 200, refreshed.text
    finally:
        await redis.delete(key)
