"""Tools: the catalog (list, pagination, show) and calls (sync, async submission, failures)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import fastapi.routing
import httpx
import pytest
import uvicorn
from arq.worker import Worker
from fastapi import FastAPI

from shared.config import Settings
from tests.backends import Backends, build_server, free_port
from tests.conftest import TEAM, unique

BACKEND_TOOLS = {"echo", "add", "sleep", "hold", "count", "fail"}
TOOL_FIELDS = {
    "id",
    "name",
    "qualified_name",
    "gateway",
    "gateway_id",
    "title",
    "description",
    "input_schema",
    "output_schema",
    "annotations",
    "icons",
    "meta",
    "execution",
}


@pytest.fixture
async def raw_client(app: FastAPI, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An authenticated client that returns 500s as responses instead of raising them."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://mcpq.test",
        headers={"Authorization": f"Bearer {settings.admin_token}"},
        timeout=30,
    ) as http:
        yield http


async def _create_gateway(client: httpx.AsyncClient, name: str, url: str, **extra: Any) -> dict[str, Any]:
    response = await client.post("/v1/gateways", json={"name": name, "url": url, "team": TEAM, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _own_session() -> dict[str, str]:
    """Headers that make the worker pool open a session of this gateway's own (the pool keys by them)."""
    return {"X-Test-Session": uuid.uuid4().hex}


async def _job_keys(app: FastAPI, settings: Settings) -> set[bytes]:
    return set(await app.state.ctx.queue.redis.keys(settings.key("job", "*")))


# --- catalog --------------------------------------------------------------------------------


async def test_list_tools_of_a_gateway(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    response = await client.get("/v1/tools", params={"gateway": gateway["name"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next_cursor"] is None
    names = [t["name"] for t in body["items"]]
    assert names == sorted(names)
    assert BACKEND_TOOLS <= set(names)
    assert len(names) == gateway["tool_count"]
    for tool in body["items"]:
        assert set(tool) == TOOL_FIELDS
        assert tool["gateway"] == gateway["name"]
        assert tool["gateway_id"] == gateway["id"]
        assert tool["qualified_name"] == f"{gateway['name']}.{tool['name']}"


async def test_list_unknown_gateway_is_empty(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/tools", params={"gateway": unique("none")})
    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}


async def test_pagination_walks_every_tool_once(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    full = (await client.get("/v1/tools", params={"gateway": gateway["name"]})).json()["items"]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"gateway": gateway["name"], "limit": 2}
        if cursor:
            params["cursor"] = cursor
        response = await client.get("/v1/tools", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 2
        seen.extend(t["name"] for t in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [t["name"] for t in full]
    assert pages == (len(full) + 1) // 2


async def test_exact_page_has_no_next_cursor(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    response = await client.get(
        "/v1/tools", params={"gateway": gateway["name"], "limit": gateway["tool_count"]}
    )
    assert response.status_code == 200
    assert len(response.json()["items"]) == gateway["tool_count"]
    assert response.json()["next_cursor"] is None


async def test_pagination_orders_by_gateway_then_tool(
    client: httpx.AsyncClient, backends: Backends, worker: Worker
) -> None:
    base = unique("pg")
    created = [
        await _create_gateway(client, f"{base}-b", backends.urls["stateless"]),
        await _create_gateway(client, f"{base}-a", backends.urls["legacy"]),
    ]
    try:
        # Walk the whole catalog one tool at a time and keep only ours.
        ours: list[tuple[str, str]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/v1/tools", params=params)).json()
            ours.extend((t["gateway"], t["name"]) for t in page["items"] if t["gateway"].startswith(base))
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert ours[0] == (f"{base}-a", "echo")  # the legacy gateway has only echo
        rest = ours[1:]
        assert {g for g, _ in rest} == {f"{base}-b"}
        assert [n for _, n in rest] == sorted(n for _, n in rest)
        assert BACKEND_TOOLS <= {n for _, n in rest}
    finally:
        for gw in created:
            await client.delete(f"/v1/gateways/{gw['id']}")


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!",
        "bm90IGpzb24",
        base64.urlsafe_b64encode(b"null").decode(),
        base64.urlsafe_b64encode(b"[1]").decode(),
        base64.urlsafe_b64encode(b"[1, 2, 3]").decode(),
    ],
)
async def test_bad_cursor_is_400(client: httpx.AsyncClient, cursor: str) -> None:
    response = await client.get("/v1/tools", params={"cursor": cursor})
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "bad_request", "detail": "invalid cursor"}


@pytest.mark.parametrize("limit", [0, -1, 501, "many"])
async def test_limit_out_of_range_is_422(client: httpx.AsyncClient, limit: Any) -> None:
    response = await client.get("/v1/tools", params={"limit": limit})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    assert body["detail"].startswith("query/limit")


async def test_limit_maximum_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/tools", params={"limit": 500})
    assert response.status_code == 200
    assert len(response.json()["items"]) <= 500


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/tools", {"gateway": "gw\x00"}),
        ("/v1/tools", {"cursor": base64.urlsafe_b64encode(json.dumps(["gw\x00", "a"]).encode()).decode()}),
        ("/v1/tools/gw%00.echo", {}),
    ],
    ids=["gateway-filter", "cursor", "tool-ref"],
)
async def test_nul_character_in_input_is_a_client_error(
    raw_client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> None:
    response = await raw_client.get(path, params=params)
    assert response.status_code in (400, 404), response.text
    assert response.json()["error"] in ("bad_request", "not_found")


async def test_get_tool_by_qualified_name_and_by_id(
    client: httpx.AsyncClient, gateway: dict[str, Any]
) -> None:
    by_name = await client.get(f"/v1/tools/{gateway['name']}.add")
    assert by_name.status_code == 200, by_name.text
    tool = by_name.json()
    assert set(tool) == TOOL_FIELDS
    assert tool["name"] == "add"
    assert tool["qualified_name"] == f"{gateway['name']}.add"
    assert tool["description"] == "Add two integers."
    assert tool["input_schema"]["type"] == "object"
    assert tool["input_schema"]["required"] == ["a", "b"]
    assert tool["input_schema"]["properties"]["a"]["type"] == "integer"
    assert tool["output_schema"]["properties"]["result"]["type"] == "integer"
    assert tool["annotations"] is None

    by_id = await client.get(f"/v1/tools/{tool['id']}")
    assert by_id.status_code == 200
    assert by_id.json() == tool


async def test_sleep_tool_shows_annotations(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    response = await client.get(f"/v1/tools/{gateway['name']}.sleep")
    assert response.status_code == 200
    tool = response.json()
    assert tool["annotations"] == {"idempotentHint": True}
    assert tool["input_schema"]["properties"]["seconds"]["type"] == "number"


@pytest.mark.parametrize("ref", ["{gw}.nope", "nope-gateway.echo", "{gw}", "{gw}.", ".echo", "{uuid}"])
async def test_unknown_tool_is_404(client: httpx.AsyncClient, gateway: dict[str, Any], ref: str) -> None:
    ref = ref.format(gw=gateway["name"], uuid=uuid.uuid4())
    response = await client.get(f"/v1/tools/{ref}")
    assert response.status_code == 404, response.text
    body = response.json()
    assert body["error"] == "not_found"
    assert ref in body["detail"]


# --- synchronous calls ----------------------------------------------------------------------


async def test_call_returns_structured_result(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    response = await client.post(
        f"/v1/tools/{gateway['name']}.add/call", json={"arguments": {"a": 2, "b": 40}}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert len(body["job_id"]) == 32
    assert body["result"]["content"] == [{"type": "text", "text": "42"}]
    assert body["result"]["structuredContent"] == {"result": 42}
    assert body["result"]["isError"] is False


async def test_call_by_tool_id(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    tool_id = (await client.get(f"/v1/tools/{gateway['name']}.echo")).json()["id"]
    response = await client.post(f"/v1/tools/{tool_id}/call", json={"arguments": {"text": "by id"}})
    assert response.status_code == 200, response.text
    assert response.json()["result"]["content"] == [{"type": "text", "text": "by id"}]


async def test_call_result_is_also_a_job(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    response = await client.post(f"/v1/tools/{gateway['name']}.echo/call", json={"arguments": {"text": "j"}})
    assert response.status_code == 200
    job = await client.get(f"/v1/jobs/{response.json()['job_id']}")
    assert job.status_code == 200
    record = job.json()
    assert record["status"] == "completed"
    assert record["kind"] == "call_tool"
    assert record["item"] == f"{gateway['name']}.echo"
    assert record["result"] == response.json()["result"]


async def test_tool_error_is_200_with_is_error(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    response = await client.post(
        f"/v1/tools/{gateway['name']}.fail/call", json={"arguments": {"message": "boom"}}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert body["result"]["isError"] is True
    assert body["result"]["content"][0]["type"] == "text"
    assert "structuredContent" not in body["result"]


async def test_call_not_done_within_timeout_is_202(
    client: httpx.AsyncClient, gateway: dict[str, Any], backends: Backends
) -> None:
    key = uuid.uuid4().hex
    gate = backends.gate(key)
    started = time.monotonic()
    response = await client.post(
        f"/v1/tools/{gateway['name']}.hold/call", json={"arguments": {"key": key}, "timeout_s": 0.3}
    )
    elapsed = time.monotonic() - started
    try:
        assert response.status_code == 202, response.text
        body = response.json()
        assert set(body) == {"job_id", "status"}
        assert body["status"] in ("queued", "running")
        assert response.headers["location"] == f"/v1/jobs/{body['job_id']}"
        assert 0.25 <= elapsed < 3
    finally:
        assert await asyncio.to_thread(gate.entered.wait, 5)
        gate.release()
    done = await client.get(response.headers["location"], params={"wait": 5})
    assert done.status_code == 200
    assert done.json()["status"] == "completed"
    assert done.json()["result"]["content"] == [{"type": "text", "text": f"released {key}"}]


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("add", {"a": "two", "b": 3}),
        ("add", {"a": 1}),
        ("echo", {"text": 5}),
        ("echo", {}),
    ],
)
async def test_invalid_arguments_are_422_and_not_enqueued(
    client: httpx.AsyncClient,
    app: FastAPI,
    settings: Settings,
    gateway: dict[str, Any],
    tool: str,
    arguments: dict[str, Any],
) -> None:
    before = await _job_keys(app, settings)
    for route in ("call", "jobs"):
        response = await client.post(
            f"/v1/tools/{gateway['name']}.{tool}/{route}", json={"arguments": arguments}
        )
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["error"] == "invalid_arguments"
        assert f"{gateway['name']}.{tool}" in body["detail"]
        assert body["errors"] and {"path", "message"} <= set(body["errors"][0])
    assert await _job_keys(app, settings) == before


async def test_invalid_arguments_list_every_error(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    response = await client.post(
        f"/v1/tools/{gateway['name']}.add/call", json={"arguments": {"a": "x", "b": "y"}}
    )
    assert response.status_code == 422
    assert [e["path"] for e in response.json()["errors"]] == ["a", "b"]


@pytest.mark.parametrize(
    "body",
    [
        {"arguments": {"text": "x"}, "colour": "blue"},
        {"arguments": "not an object"},
        {"arguments": {"text": "x"}, "timeout_s": 0},
        {"arguments": {"text": "x"}, "timeout_s": -1},
    ],
)
async def test_bad_call_body_is_422(
    client: httpx.AsyncClient, gateway: dict[str, Any], body: dict[str, Any]
) -> None:
    response = await client.post(f"/v1/tools/{gateway['name']}.echo/call", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error"
    assert response.json()["detail"].startswith("body/")


async def test_call_timeout_above_max_wait_is_422(
    client: httpx.AsyncClient, gateway: dict[str, Any], settings: Settings
) -> None:
    response = await client.post(
        f"/v1/tools/{gateway['name']}.echo/call",
        json={"arguments": {"text": "x"}, "timeout_s": settings.max_wait_s + 1},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error"
    assert str(settings.max_wait_s) in response.json()["detail"]


@pytest.mark.parametrize("route", ["call", "jobs"])
async def test_call_unknown_tool_is_404(
    client: httpx.AsyncClient, gateway: dict[str, Any], route: str
) -> None:
    response = await client.post(f"/v1/tools/{gateway['name']}.nope/{route}", json={"arguments": {}})
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "not_found"


async def test_backend_timeout_is_504(client: httpx.AsyncClient, backends: Backends, worker: Worker) -> None:
    # A header of its own gives this gateway its own pooled worker session, so the failure
    # (which drops that session) leaves the session other tests share untouched.
    gw = await _create_gateway(
        client, unique("slow"), backends.urls["stateful"], timeout_s=0.5, headers=_own_session()
    )
    try:
        started = time.monotonic()
        response = await client.post(f"/v1/tools/{gw['name']}.sleep/call", json={"arguments": {"seconds": 3}})
        elapsed = time.monotonic() - started
        assert response.status_code == 504, response.text
        body = response.json()
        assert body["error"] == "timeout"
        assert body["status"] == "failed"
        assert "0.5" in body["detail"]
        assert elapsed < 2.5
        job = (await client.get(f"/v1/jobs/{body['job_id']}")).json()
        assert job["status"] == "failed"
        assert job["error"]["type"] == "timeout"
        assert "result" not in job
    finally:
        await client.delete(f"/v1/gateways/{gw['id']}")


# --- a backend of the test's own, stopped after registration --------------------------------


@dataclass
class OwnBackend:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.to_thread(self.thread.join, 10)
        assert not self.thread.is_alive()


async def start_own_backend(port: int | None = None) -> OwnBackend:
    """The test tools on a stateless JSON streamable-HTTP server in a thread of its own."""
    port = port or free_port()
    app = build_server({}, {}).streamable_http_app(stateless_http=True, json_response=True)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", timeout_graceful_shutdown=1
        )
    )
    thread = threading.Thread(target=server.run, name=f"own-backend-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "own backend did not start"
        await asyncio.sleep(0.01)
    return OwnBackend(f"http://127.0.0.1:{port}/mcp", server, thread)


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


@pytest.fixture
async def own_backend() -> AsyncIterator[OwnBackend]:
    backend = await start_own_backend()
    yield backend
    if backend.thread.is_alive():
        await backend.stop()


async def _register_then_stop(client: httpx.AsyncClient, backend: OwnBackend) -> dict[str, Any]:
    """Register a gateway on `backend`, prove a call works, then stop the backend."""
    gw = await _create_gateway(client, unique("gone"), backend.url, timeout_s=5)
    ok = await client.post(f"/v1/tools/{gw['name']}.echo/call", json={"arguments": {"text": "up"}})
    assert ok.status_code == 200, ok.text
    assert ok.json()["result"]["content"] == [{"type": "text", "text": "up"}]
    await backend.stop()
    return gw


async def test_backend_gone_after_registration_is_502(
    client: httpx.AsyncClient, own_backend: OwnBackend, worker: Worker
) -> None:
    gw = await _register_then_stop(client, own_backend)
    try:
        started = time.monotonic()
        response = await client.post(
            f"/v1/tools/{gw['name']}.echo/call", json={"arguments": {"text": "down"}}
        )
        assert response.status_code == 502, response.text
        body = response.json()
        assert body["status"] == "failed"
        assert body["error"] in ("backend_unavailable", "protocol_error")
        assert body["detail"]
        assert time.monotonic() - started < 5
        job = (await client.get(f"/v1/jobs/{body['job_id']}")).json()
        assert job["status"] == "failed"
        assert job["error"]["type"] == body["error"]
        assert "result" not in job
    finally:
        await client.delete(f"/v1/gateways/{gw['id']}")


async def test_backend_gone_is_reported_as_unavailable(
    client: httpx.AsyncClient, own_backend: OwnBackend, worker: Worker
) -> None:
    gw = await _register_then_stop(client, own_backend)
    try:
        response = await client.post(
            f"/v1/tools/{gw['name']}.echo/call", json={"arguments": {"text": "down"}}
        )
        assert response.status_code == 502, response.text
        # The same condition with no pooled session (first contact) is reported as backend_unavailable.
        assert response.json()["error"] == "backend_unavailable", response.json()
    finally:
        await client.delete(f"/v1/gateways/{gw['id']}")


async def test_backend_restarted_after_registration_works_again(
    client: httpx.AsyncClient, own_backend: OwnBackend, worker: Worker
) -> None:
    gw = await _register_then_stop(client, own_backend)
    restarted = await start_own_backend(_port(own_backend.url))
    try:
        response = await client.post(
            f"/v1/tools/{gw['name']}.echo/call", json={"arguments": {"text": "back"}}
        )
        assert response.status_code == 200, response.text
        assert response.json()["result"]["content"] == [{"type": "text", "text": "back"}]
    finally:
        await client.delete(f"/v1/gateways/{gw['id']}")
        await restarted.stop()


async def test_refresh_while_backend_down_is_502_and_keeps_catalog(
    client: httpx.AsyncClient, own_backend: OwnBackend, worker: Worker
) -> None:
    gw = await _register_then_stop(client, own_backend)
    try:
        failed = await client.post(f"/v1/tools/{gw['name']}.echo/call", json={"arguments": {"text": "down"}})
        assert failed.status_code == 502, failed.text  # this ends the worker's pooled session

        response = await client.post(f"/v1/gateways/{gw['id']}/refresh")
        assert response.status_code == 502, response.text  # actual: 200 with tool_count 0
        tools = await client.get("/v1/tools", params={"gateway": gw["name"]})
        assert len(tools.json()["items"]) == gw["tool_count"]
    finally:
        await client.delete(f"/v1/gateways/{gw['id']}")


async def test_refresh_after_backend_restart_rediscovers_the_catalog(
    client: httpx.AsyncClient, own_backend: OwnBackend, worker: Worker
) -> None:
    gw = await _register_then_stop(client, own_backend)
    restarted: OwnBackend | None = None
    try:
        failed = await client.post(f"/v1/tools/{gw['name']}.echo/call", json={"arguments": {"text": "down"}})
        assert failed.status_code == 502, failed.text  # this ends the worker's pooled session
        restarted = await start_own_backend(_port(own_backend.url))

        response = await client.post(f"/v1/gateways/{gw['id']}/refresh")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["server_name"] == "mcpq-test-backend", body  # actual: None
        assert body["tool_count"] == gw["tool_count"], body  # actual: 0
    finally:
        await client.delete(f"/v1/gateways/{gw['id']}")
        if restarted is not None:
            await restarted.stop()


# --- async submission -----------------------------------------------------------------------


async def test_submit_job_is_202_queued_with_location(
    client: httpx.AsyncClient, gateway: dict[str, Any]
) -> None:
    response = await client.post(
        f"/v1/tools/{gateway['name']}.add/jobs", json={"arguments": {"a": 1, "b": 2}}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body == {"job_id": body["job_id"], "status": "queued"}
    assert response.headers["location"] == f"/v1/jobs/{body['job_id']}"

    done = await client.get(response.headers["location"], params={"wait": 5})
    assert done.status_code == 200
    job = done.json()
    assert job["status"] == "completed"
    assert job["item"] == f"{gateway['name']}.add"
    assert job["result"]["structuredContent"] == {"result": 3}


async def test_submit_unknown_body_field_is_422(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    response = await client.post(
        f"/v1/tools/{gateway['name']}.echo/jobs", json={"arguments": {"text": "x"}, "timeout_s": 5}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("body/timeout_s")


async def test_call_without_arguments_uses_empty_object(
    client: httpx.AsyncClient, gateway: dict[str, Any]
) -> None:
    response = await client.post(f"/v1/tools/{gateway['name']}.echo/call", json={})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_arguments"
    assert "'text' is a required property" in body["detail"]


async def test_ordinary_calls_skip_fastapis_dependency_solving(
    client: httpx.AsyncClient, gateway: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # api/routers/items.py: a JSON body that is valid as it is, without an Idempotency-Key, is
    # served without FastAPI's per-request dependency solving; any other request goes through
    # FastAPI, and every answer is what FastAPI's route gives.
    solved = 0
    solve = fastapi.routing.solve_dependencies

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal solved
        solved += 1
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    path = f"/v1/tools/{gateway['name']}.echo/call"

    ordinary = await client.post(path, json={"arguments": {"text": "fast"}, "timeout_s": 10})
    assert ordinary.status_code == 200, ordinary.text
    assert ordinary.json()["result"]["content"][0]["text"] == "fast"
    assert solved == 0

    keyed = await client.post(
        path, json={"arguments": {"text": "keyed"}}, headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    assert keyed.status_code == 200 and keyed.json()["result"]["content"][0]["text"] == "keyed"
    assert solved == 1

    wrapped_wrong = await client.post(path, json={"text": "no wrapper"})
    assert wrapped_wrong.status_code == 422
    assert 'under "arguments"' in wrapped_wrong.json()["detail"]
    assert solved == 2

    # A valid body from an unknown caller: 401, on either path.
    stranger = await client.post(
        path, json={"arguments": {"text": "x"}}, headers={"Authorization": "Bearer not-a-token"}
    )
    assert stranger.status_code == 401
    assert stranger.headers["WWW-Authenticate"] == "Bearer"
    assert solved == 2
