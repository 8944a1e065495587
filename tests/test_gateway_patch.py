"""PATCH /v1/gateways/{id}: a new URL or credential is tried by a discovery before it is stored;
when that fails, nothing changes. Who may patch is in tests/test_authz.py's matrix."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest
from arq.worker import Worker
from prometheus_client import REGISTRY

from tests.backends import Backends, OAuthServer, free_port
from tests.conftest import TEAM, instant, unique
from tests.test_oauth import auth_body


async def _tools(client: httpx.AsyncClient, gateway: dict[str, Any]) -> set[str]:
    response = await client.get("/v1/tools", params={"gateway": gateway["name"]})
    assert response.status_code == 200, response.text
    return {t["name"] for t in response.json()["items"]}


async def _shown(client: httpx.AsyncClient, gateway: dict[str, Any]) -> dict[str, Any]:
    response = await client.get(f"/v1/gateways/{gateway['id']}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _stored(gateway: dict[str, Any]) -> dict[str, Any]:
    """What a PATCH that failed must leave as it was (breaker and health are live state)."""
    live = {"breaker", "last_seen_ok_at", "last_error", "last_error_at"}
    return {k: v for k, v in gateway.items() if k not in live}


async def test_a_new_url_is_discovered_before_it_is_stored(
    client: httpx.AsyncClient, gateway: dict[str, Any], backends: Backends
) -> None:
    assert "grow" not in await _tools(client, gateway)
    response = await client.patch(f"/v1/gateways/{gateway['id']}", json={"url": backends.urls["growing"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["url"] == backends.urls["growing"]
    assert body["server_name"] == "mcpq-growing-backend"
    assert instant(body["refreshed_at"]) > instant(gateway["refreshed_at"])
    assert "grow" in await _tools(client, gateway) and "echo" not in await _tools(client, gateway)
    call = await client.post(
        f"/v1/tools/{gateway['name']}.grow/call", json={"arguments": {"name": unique("t")}}
    )
    assert call.status_code == 200, call.text


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("http://127.0.0.1:{port}/mcp", 502),  # nothing listens there
        ("http://10.0.0.9/mcp", 422),  # refused by the SSRF guard
        ("ftp://127.0.0.1/mcp", 422),  # not http(s)
    ],
)
async def test_a_bad_url_changes_nothing(
    client: httpx.AsyncClient, gateway: dict[str, Any], url: str, status: int
) -> None:
    before, tools = await _shown(client, gateway), await _tools(client, gateway)
    response = await client.patch(
        f"/v1/gateways/{gateway['id']}", json={"url": url.format(port=free_port()), "timeout_s": 5}
    )
    assert response.status_code == status, response.text
    assert _stored(await _shown(client, gateway)) == _stored(before)
    assert await _tools(client, gateway) == tools


async def test_timeout_and_visibility_change_without_discovery(
    client: httpx.AsyncClient, gateway: dict[str, Any]
) -> None:
    response = await client.patch(
        f"/v1/gateways/{gateway['id']}", json={"timeout_s": 12.5, "visibility": "public"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["timeout_s"], body["visibility"]) == (12.5, "public")
    assert body["refreshed_at"] == gateway["refreshed_at"]  # no discovery ran
    assert instant(body["updated_at"]) > instant(gateway["updated_at"])
    empty = await client.patch(f"/v1/gateways/{gateway['id']}", json={})
    assert empty.status_code == 200, empty.text
    assert (empty.json()["timeout_s"], empty.json()["visibility"]) == (12.5, "public")


@pytest.mark.parametrize(
    "body",
    [
        {"timeout_s": 0},
        {"timeout_s": 10_000},
        {"timeout_s": None},
        {"url": None},
        {"visibility": "everyone"},
        {"headers": {"bad name": "x"}},
        {"name": "renamed"},  # not patchable
        {"transport": "sse"},
        {"command": "/bin/sh"},  # stdio fields on an HTTP gateway
        {"args": ["x"]},
        {"env": {"A": "b"}},
        {"cwd": "/tmp"},
    ],
)
async def test_bad_patch_is_422_and_changes_nothing(
    client: httpx.AsyncClient, gateway: dict[str, Any], body: dict[str, Any]
) -> None:
    before = await _shown(client, gateway)
    response = await client.patch(f"/v1/gateways/{gateway['id']}", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error"
    assert _stored(await _shown(client, gateway)) == _stored(before)


async def test_stdio_fields_on_an_http_gateway_say_so(
    client: httpx.AsyncClient, gateway: dict[str, Any]
) -> None:
    response = await client.patch(f"/v1/gateways/{gateway['id']}", json={"args": ["x"]})
    assert response.status_code == 422, response.text
    assert (
        "command, args, env and cwd are for stdio gateways, not streamable_http ones"
        in response.json()["detail"]
    )


@pytest.mark.parametrize("ref", [str(uuid.uuid4()), "nope"])
async def test_patch_of_an_unknown_gateway_is_404(client: httpx.AsyncClient, ref: str) -> None:
    response = await client.patch(f"/v1/gateways/{ref}", json={"timeout_s": 5})
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "not_found"


@pytest.fixture
async def oauth_gateway(client: httpx.AsyncClient, backends: Backends, worker: Worker) -> Any:
    assert backends.oauth is not None
    oauth = backends.oauth
    auth = auth_body(backends, oauth)
    response = await client.post(
        "/v1/gateways",
        json={"name": unique("oauth"), "team": TEAM, "url": backends.urls["oauth"], "auth": auth},
    )
    assert response.status_code == 201, response.text
    gateway = response.json()
    yield gateway, oauth, auth
    await client.delete(f"/v1/gateways/{gateway['id']}")


async def test_credentials_are_tried_before_they_are_stored(
    client: httpx.AsyncClient,
    backends: Backends,
    oauth_gateway: tuple[dict[str, Any], OAuthServer, dict[str, Any]],
) -> None:
    gateway, oauth, auth = oauth_gateway
    path = f"/v1/gateways/{gateway['id']}"
    before = await _shown(client, gateway)
    # A wrong secret, and no auth at all (the backend then answers 401): refused, nothing stored.
    for body in ({"auth": {**auth, "client_secret": "wrong"}}, {"auth": None}):
        response = await client.patch(path, json=body)
        assert response.status_code == 502, response.text
        assert _stored(await _shown(client, gateway)) == _stored(before)
    call = await client.post(f"/v1/tools/{gateway['name']}.echo/call", json={"arguments": {"text": "x"}})
    assert call.status_code == 200, call.text

    # A new scope: a new token is fetched for it, and the gateway shows it.
    other = unique("mcp:other")
    response = await client.patch(path, json={"auth": {**auth, "scope": other}})
    assert response.status_code == 200, response.text
    assert response.json()["auth"]["scope"] == other
    assert len(oauth.issued_for(other)) == 1
    call = await client.post(f"/v1/tools/{gateway['name']}.echo/call", json={"arguments": {"text": "y"}})
    assert call.status_code == 200, call.text


async def test_auth_can_be_added_to_a_gateway_and_removed(
    client: httpx.AsyncClient, gateway: dict[str, Any], backends: Backends
) -> None:
    assert backends.oauth is not None
    path = f"/v1/gateways/{gateway['id']}"
    auth = auth_body(backends, backends.oauth)
    moved = await client.patch(path, json={"url": backends.urls["oauth"], "auth": auth})
    assert moved.status_code == 200, moved.text
    assert moved.json()["auth"]["client_id"] == backends.oauth.client_id
    call = await client.post(f"/v1/tools/{gateway['name']}.echo/call", json={"arguments": {"text": "z"}})
    assert call.status_code == 200, call.text
    back = await client.patch(path, json={"url": backends.urls["stateful"], "auth": None})
    assert back.status_code == 200, back.text
    assert back.json()["auth"] is None


async def test_headers_are_replaced_and_never_shown(
    client: httpx.AsyncClient, gateway: dict[str, Any], backends: Backends
) -> None:
    secret = f"sk-{uuid.uuid4().hex}"
    response = await client.patch(
        f"/v1/gateways/{gateway['id']}",
        json={"url": backends.urls["legacy"], "headers": {"X-Api-Key": secret}},
    )
    assert response.status_code == 200, response.text
    assert secret not in response.text
    call = await client.post(f"/v1/tools/{gateway['name']}.echo/call", json={"arguments": {"text": "h"}})
    assert call.status_code == 200, call.text
    assert backends.legacy.last_headers.get("x-api-key") == secret


def _live_sessions(gateway: dict[str, Any]) -> float:
    """Pooled sessions the in-process worker holds to the gateway (its metric)."""
    return REGISTRY.get_sample_value("mcpq_worker_mcp_sessions", {"gateway": gateway["name"]}) or 0.0


async def _until_no_session(gateway: dict[str, Any]) -> None:
    deadline = time.monotonic() + 5
    while _live_sessions(gateway) > 0:
        assert time.monotonic() < deadline, "the worker kept its sessions to the old backend"
        await asyncio.sleep(0.05)


async def test_workers_close_their_sessions_to_a_moved_or_deleted_gateway(
    client: httpx.AsyncClient, gateway: dict[str, Any], backends: Backends
) -> None:
    call = await client.post(f"/v1/tools/{gateway['name']}.echo/call", json={"arguments": {"text": "1"}})
    assert call.status_code == 200, call.text
    assert _live_sessions(gateway) >= 1
    moved = await client.patch(f"/v1/gateways/{gateway['id']}", json={"url": backends.urls["stateless"]})
    assert moved.status_code == 200, moved.text
    await _until_no_session(gateway)  # not left to idle out with their streams to the old URL
    call = await client.post(f"/v1/tools/{gateway['name']}.echo/call", json={"arguments": {"text": "2"}})
    assert call.status_code == 200, call.text
    assert _live_sessions(gateway) >= 1
    assert (await client.delete(f"/v1/gateways/{gateway['id']}")).status_code == 204
    await _until_no_session(gateway)
