"""Catalogs that follow their backends: a backend that adds a tool and says so
(`notifications/tools/list_changed` at 2025-11-25, a `subscriptions/listen` event at 2026-07-28)
is refreshed without a manual call, and a burst of notices costs at most a few refreshes."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from arq.worker import Worker
from fastapi import FastAPI

from shared.config import Settings
from shared.gateways import service as gateway_service
from shared.gateways.follow import CatalogFollower
from tests.backends import Backends
from tests.conftest import TEAM, instant, isolated, unique


@pytest.fixture(params=["growing", "growing_handshake"])
async def growing(
    request: pytest.FixtureRequest, client: httpx.AsyncClient, backends: Backends, worker: Worker
) -> AsyncIterator[dict[str, Any]]:
    response = await client.post(
        "/v1/gateways", json={"name": unique("grow"), "team": TEAM, "url": backends.urls[request.param]}
    )
    assert response.status_code == 201, response.text
    gateway: dict[str, Any] = response.json()
    yield gateway
    await client.delete(f"/v1/gateways/{gateway['id']}")


async def _tools(client: httpx.AsyncClient, gateway: dict[str, Any]) -> set[str]:
    response = await client.get("/v1/tools", params={"gateway": gateway["name"]})
    assert response.status_code == 200, response.text
    return {t["name"] for t in response.json()["items"]}


async def _grow(client: httpx.AsyncClient, gateway: dict[str, Any], name: str) -> None:
    call = await client.post(f"/v1/tools/{gateway['name']}.grow/call", json={"arguments": {"name": name}})
    assert call.status_code == 200, call.text


async def _until_listed(client: httpx.AsyncClient, gateway: dict[str, Any], names: set[str]) -> float:
    """Seconds until every one of `names` is in the gateway's catalog (fails after 15 s)."""
    started = time.monotonic()
    while not names <= await _tools(client, gateway):
        assert time.monotonic() - started < 15, f"{names - await _tools(client, gateway)} never listed"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def _discoveries(client: httpx.AsyncClient, gateway: dict[str, Any]) -> int:
    jobs = (await client.get("/v1/jobs", params={"limit": 200})).json()["items"]
    return sum(1 for j in jobs if j["item"] == f"{gateway['name']} (discovery)")


async def test_a_backend_that_adds_a_tool_is_refreshed_without_a_manual_call(
    client: httpx.AsyncClient, growing: dict[str, Any]
) -> None:
    name = unique("tool")
    assert name not in await _tools(client, growing)
    await _grow(client, growing, name)
    waited = await _until_listed(client, growing, {name})
    assert waited < 5  # the first notice is acted on at once, not after the coalescing window
    call = await client.post(f"/v1/tools/{growing['name']}.{name}/call", json={"arguments": {"text": "new"}})
    assert call.status_code == 200, call.text
    shown = (await client.get(f"/v1/gateways/{growing['id']}")).json()
    assert instant(shown["refreshed_at"]) > instant(growing["refreshed_at"])


async def test_a_burst_of_notices_is_coalesced_and_none_is_lost(
    client: httpx.AsyncClient, growing: dict[str, Any]
) -> None:
    names = {unique("burst") for _ in range(5)}
    for name in names:  # five changes, each announced (to every session that listens)
        await _grow(client, growing, name)
    await _until_listed(client, growing, names)
    # Registration, the refresh the first notice started, and at most one after the window for
    # the notices that came during it: not one refresh per notice.
    assert await _discoveries(client, growing) <= 3


async def test_two_api_processes_refresh_once_per_window_and_once_after_it(
    app: FastAPI, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = 0.5
    ctx = dataclasses.replace(app.state.ctx, settings=isolated(settings, catalog_refresh_coalesce_s=window))
    refreshed: list[uuid.UUID] = []

    async def refresh(_: object, gateway_id: uuid.UUID) -> None:
        refreshed.append(gateway_id)
        await asyncio.sleep(0.05)

    monkeypatch.setattr(gateway_service, "refresh_by_id", refresh)
    first, second = CatalogFollower(ctx, ctx.queue.redis), CatalogFollower(ctx, ctx.queue.redis)
    gateway_id = uuid.uuid4()
    try:
        for follower in (first, second, first, second):
            follower.heard(str(gateway_id))
        await asyncio.sleep(window / 2)
        assert refreshed == [gateway_id]  # four notices, two processes: one refresh
        second.heard(str(gateway_id))  # a change during the window is not lost...
        first.heard(str(gateway_id))
        await asyncio.sleep(window + 0.3)
        assert refreshed == [gateway_id] * 2  # ...but refreshed once, after the window
        await asyncio.sleep(window + 0.3)
        assert refreshed == [gateway_id] * 2
        assert not await ctx.queue.redis.exists(ctx.settings.key("catalog", "refreshing", str(gateway_id)))
        second.heard(str(gateway_id))  # the lock was released: the next notice refreshes at once
        await asyncio.sleep(0.2)
        assert refreshed == [gateway_id] * 3
        first.heard("not-a-gateway-id")  # ignored
    finally:
        await first.close()
        await second.close()
