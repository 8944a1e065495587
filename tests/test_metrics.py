"""GET /metrics exposes the families operators need, with values that follow the traffic."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from shared.config import Settings
from tests.backends import free_port
from workers.main import serve_metrics


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(snapshot: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return snapshot.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.get("/metrics", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def test_metrics_follow_calls(
    app: FastAPI, client: httpx.AsyncClient, gateway: dict[str, Any], settings: Settings
) -> None:
    before = await scrape(client)
    name = gateway["name"]
    for i in range(3):
        ok = await client.post(f"/v1/tools/{name}.echo/call", json={"arguments": {"text": str(i)}})
        assert ok.status_code == 200
    submitted = await client.post(f"/v1/tools/{name}.echo/jobs", json={"arguments": {"text": "a"}})
    await client.get(f"/v1/jobs/{submitted.json()['job_id']}", params={"wait": 10})
    rejected = await client.post(f"/v1/tools/{name}.add/call", json={"arguments": {"a": "x", "b": 1}})
    assert rejected.status_code == 422
    after = await scrape(client)

    def delta(metric: str, **labels: str) -> float:
        return value(after, metric, **labels) - value(before, metric, **labels)

    assert delta("mcpq_calls_total", kind="tool", mode="sync", outcome="completed") == 3
    assert delta("mcpq_calls_total", kind="tool", mode="async", outcome="accepted") == 1
    assert delta("mcpq_calls_total", kind="tool", mode="sync", outcome="rejected") == 1
    assert delta("mcpq_call_seconds_count", kind="tool", mode="sync") == 3
    assert 0 < delta("mcpq_call_seconds_sum", kind="tool", mode="sync") < 30
    assert delta("mcpq_jobs_total", kind="call_tool", outcome="completed") == 4
    for stage in ("queue_wait", "execution", "end_to_end"):
        histogram = f"mcpq_job_{stage}_seconds"
        assert delta(f"{histogram}_count", kind="call_tool") == 4
        assert 0 <= delta(f"{histogram}_sum", kind="call_tool") < 30
    # Gauges read at scrape time.
    assert value(after, "mcpq_db_pool_size") == settings.db_pool_size
    assert value(after, "mcpq_db_pool_checked_out") == 0
    assert value(after, "mcpq_queue_depth") == 0
    assert value(after, "mcpq_api_waiting_requests") == 0
    assert value(after, "mcpq_worker_jobs_in_flight") == 0
    assert value(after, "mcpq_worker_mcp_sessions", gateway=name) >= 1


async def test_worker_serves_metrics_on_its_port(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    port = free_port()
    serve_metrics("127.0.0.1", port)
    await client.post(f"/v1/tools/{gateway['name']}.echo/call", json={"arguments": {"text": "m"}})
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    scraped = samples(response.text)
    assert value(scraped, "mcpq_jobs_total", kind="call_tool", outcome="completed") >= 1
    assert ("mcpq_worker_jobs_in_flight", frozenset()) in scraped
