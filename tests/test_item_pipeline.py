"""Tools, resources and prompts go through one pipeline: every kind is cached, counted and timed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from tests.test_metrics import scrape, value


@contextlib.contextmanager
def statements(app: FastAPI) -> Iterator[list[str]]:
    """The SQL the API sends while the block runs."""
    seen: list[str] = []
    engine = app.state.engine.sync_engine

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


CASES = [
    ("resource", "/v1/resources/{gw}:demo://readme/read", {}, "resources"),
    ("prompt", "/v1/prompts/{gw}.greet/render", {"arguments": {"name": "Ada"}}, "prompts"),
    ("tool", "/v1/tools/{gw}.echo/call", {"arguments": {"text": "hi"}}, "tools"),
]


@pytest.mark.parametrize(("kind", "path", "body", "table"), CASES)
async def test_every_kind_hits_the_cache_and_is_counted(
    app: FastAPI,
    client: httpx.AsyncClient,
    gateway: dict[str, Any],
    kind: str,
    path: str,
    body: dict[str, Any],
    table: str,
) -> None:
    url = path.format(gw=gateway["name"])
    app.state.ctx.item_cache.clear()
    before = await scrape(client)
    with statements(app) as first:
        assert (await client.post(url, json=body)).status_code == 200
    with statements(app) as second:
        assert (await client.post(url, json=body)).status_code == 200
    after = await scrape(client)
    # The first call looked the item up; the second found it in the cache.
    assert any(f"FROM {table}" in s for s in first), first
    assert not any(f"FROM {table}" in s for s in second), second

    def delta(metric: str, **labels: str) -> float:
        return value(after, metric, **labels) - value(before, metric, **labels)

    assert delta("mcpq_calls_total", kind=kind, mode="sync", outcome="completed") == 2
    assert delta("mcpq_call_seconds_count", kind=kind, mode="sync") == 2


@pytest.mark.parametrize(
    ("kind", "path", "body"),
    [
        ("resource", "/v1/resources/{gw}:demo://readme/read", {"uri": "demo://elsewhere"}),
        ("prompt", "/v1/prompts/{gw}.greet/render", {"arguments": {}}),
    ],
)
async def test_refusals_of_every_kind_are_counted(
    client: httpx.AsyncClient, gateway: dict[str, Any], kind: str, path: str, body: dict[str, Any]
) -> None:
    before = await scrape(client)
    response = await client.post(path.format(gw=gateway["name"]), json=body)
    assert response.status_code == 422, response.text
    after = await scrape(client)
    rejected = {"kind": kind, "mode": "sync", "outcome": "rejected"}
    assert value(after, "mcpq_calls_total", **rejected) - value(before, "mcpq_calls_total", **rejected) == 1


async def test_a_catalog_change_empties_the_cache(
    app: FastAPI, client: httpx.AsyncClient, gateway: dict[str, Any]
) -> None:
    url = f"/v1/prompts/{gateway['name']}.greet/render"
    assert (await client.post(url, json={"arguments": {"name": "x"}})).status_code == 200
    refreshed = await client.post(f"/v1/gateways/{gateway['id']}/refresh")
    assert refreshed.status_code == 200, refreshed.text
    with statements(app) as after_refresh:
        assert (await client.post(url, json={"arguments": {"name": "y"}})).status_code == 200
    assert any("FROM prompts" in s for s in after_refresh)
