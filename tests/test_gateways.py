"""Gateways: register (discovery on a worker), list, show, delete, refresh, and every transport."""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

import httpx
import pytest
from arq.worker import Worker
from fastapi import FastAPI
from sqlalchemy import select, update

from shared.config import Settings
from shared.models import Gateway, Tool
from tests.backends import Backends, free_port
from tests.conftest import TEAM, Register, instant, unique

# The tools build_server() defines at least (others may be added to the test backend).
BACKEND_TOOLS = {"echo", "add", "sleep", "hold", "count", "fail"}
GATEWAY_FIELDS = {
    "id",
    "team_id",
    "visibility",
    "name",
    "url",
    "transport",
    "command",
    "args",
    "cwd",
    "timeout_s",
    "status",
    "protocol_version",
    "server_name",
    "server_version",
    "capabilities",
    "tool_count",
    "resource_count",
    "prompt_count",
    "created_at",
    "updated_at",
    "refreshed_at",
    "breaker",
    "auth",
    "last_seen_ok_at",
    "last_error",
    "last_error_at",
}


async def _listed_names(client: httpx.AsyncClient) -> set[str]:
    response = await client.get("/v1/gateways")
    assert response.status_code == 200, response.text
    return {g["name"] for g in response.json()["items"]}


async def _tool_names(client: httpx.AsyncClient, gateway: str) -> set[str]:
    response = await client.get("/v1/tools", params={"gateway": gateway})
    assert response.status_code == 200, response.text
    return {t["name"] for t in response.json()["items"]}


# --- register -------------------------------------------------------------------------------


async def test_register_discovers_the_catalog(register: Register, backends: Backends) -> None:
    name = unique()
    response = await register(name=name, url=backends.urls["stateful"])
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == GATEWAY_FIELDS
    uuid.UUID(body["id"])
    assert body["name"] == name
    assert body["url"] == backends.urls["stateful"]
    assert body["transport"] == "streamable_http"
    assert body["status"] == "active"
    assert body["server_name"] == "mcpq-test-backend"
    assert body["server_version"] == "1.2.3"
    assert body["protocol_version"]
    # The backend's capabilities as its handshake declared them.
    assert body["capabilities"]["tools"] is not None and body["capabilities"]["prompts"] is not None
    assert body["tool_count"] >= len(BACKEND_TOOLS)
    assert body["resource_count"] == 4  # three resources and a template
    assert body["prompt_count"] == 1


async def test_register_uses_default_timeout(
    register: Register, backends: Backends, settings: Settings
) -> None:
    response = await register(name=unique(), url=backends.urls["stateful"])
    assert response.status_code == 201, response.text
    assert response.json()["timeout_s"] == settings.default_backend_timeout_s


async def test_register_keeps_explicit_timeout(register: Register, backends: Backends) -> None:
    response = await register(name=unique(), url=backends.urls["stateful"], timeout_s=12.5)
    assert response.status_code == 201, response.text
    assert response.json()["timeout_s"] == 12.5


async def test_headers_are_never_returned(
    register: Register, client: httpx.AsyncClient, backends: Backends
) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    response = await register(name=unique(), url=backends.urls["stateful"], headers={"X-Api-Key": secret})
    assert response.status_code == 201, response.text
    gateway_id = response.json()["id"]
    assert "headers" not in response.json()
    assert secret not in response.text

    shown = await client.get(f"/v1/gateways/{gateway_id}")
    assert shown.status_code == 200
    assert "headers" not in shown.json()
    assert secret not in shown.text

    listed = await client.get("/v1/gateways")
    assert listed.status_code == 200
    assert secret not in listed.text

    refreshed = await client.post(f"/v1/gateways/{gateway_id}/refresh")
    assert refreshed.status_code == 200
    assert "headers" not in refreshed.json()
    assert secret not in refreshed.text


@pytest.mark.parametrize("name", ["Upper", "has.dot", "has space", "", "x" * 65, "ünïcode", "slash/name"])
async def test_invalid_name_is_422(register: Register, backends: Backends, name: str) -> None:
    response = await register(name=name, url=backends.urls["stateful"])
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    assert body["detail"].startswith("body/name")


async def test_longest_valid_name_is_accepted(register: Register, backends: Backends) -> None:
    name = ("a" + uuid.uuid4().hex * 2)[:64]
    response = await register(name=name, url=backends.urls["stateful"])
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/mcp", "file:///etc/passwd", "127.0.0.1:8000/mcp", "http://", "not a url"]
)
async def test_bad_url_is_422(register: Register, url: str) -> None:
    response = await register(name=unique(), url=url)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    assert body["detail"].startswith("body/url")


async def test_unknown_transport_is_422(register: Register, backends: Backends) -> None:
    response = await register(name=unique(), url=backends.urls["stateful"], transport="websocket")
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("body/transport")


async def test_unknown_field_is_422(register: Register, backends: Backends) -> None:
    response = await register(name=unique(), url=backends.urls["stateful"], colour="blue")
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("body/colour")


@pytest.mark.parametrize("headers", [{"Bad Name": "v"}, {"X-Ok": "line\r\nbreak"}, {"": "v"}])
async def test_invalid_headers_are_422(
    register: Register, backends: Backends, headers: dict[str, str]
) -> None:
    response = await register(name=unique(), url=backends.urls["stateful"], headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("body/headers")


async def test_timeout_above_maximum_is_422(
    register: Register, client: httpx.AsyncClient, backends: Backends, settings: Settings
) -> None:
    name = unique()
    response = await register(
        name=name, url=backends.urls["stateful"], timeout_s=settings.max_backend_timeout_s + 1
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    assert str(settings.max_backend_timeout_s) in body["detail"]
    assert name not in await _listed_names(client)


@pytest.mark.parametrize("timeout_s", [0, -1])
async def test_non_positive_timeout_is_422(register: Register, backends: Backends, timeout_s: float) -> None:
    response = await register(name=unique(), url=backends.urls["stateful"], timeout_s=timeout_s)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("body/timeout_s")


async def test_unreachable_backend_is_502_and_nothing_stored(
    register: Register, client: httpx.AsyncClient
) -> None:
    name = unique()
    url = f"http://127.0.0.1:{free_port()}/mcp"
    response = await register(name=name, url=url)
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["error"] == "backend_error"
    assert url in body["detail"]
    assert body["job_id"]
    assert name not in await _listed_names(client)
    assert await _tool_names(client, name) == set()


async def test_non_mcp_endpoint_is_502_and_nothing_stored(
    register: Register, client: httpx.AsyncClient, backends: Backends
) -> None:
    name = unique()
    url = backends.urls["stateful"].replace("/mcp", "/not-mcp")  # an HTTP server answering 404
    response = await register(name=name, url=url)
    assert response.status_code == 502, response.text
    assert response.json()["error"] == "backend_error"
    assert name not in await _listed_names(client)


async def test_failed_registration_leaves_the_name_free(register: Register, backends: Backends) -> None:
    name = unique()
    failed = await register(name=name, url=f"http://127.0.0.1:{free_port()}/mcp")
    assert failed.status_code == 502
    retried = await register(name=name, url=backends.urls["stateful"])
    assert retried.status_code == 201, retried.text
    assert retried.json()["name"] == name


async def test_duplicate_name_is_409(
    register: Register, client: httpx.AsyncClient, backends: Backends
) -> None:
    name = unique()
    first = await register(name=name, url=backends.urls["stateful"])
    assert first.status_code == 201, first.text
    second = await register(name=name, url=backends.urls["stateless"])
    assert second.status_code == 409, second.text
    body = second.json()
    assert body["error"] == "conflict"
    assert name in body["detail"]
    # The original is untouched.
    shown = await client.get(f"/v1/gateways/{first.json()['id']}")
    assert shown.json()["url"] == backends.urls["stateful"]


# --- list and show --------------------------------------------------------------------------


async def test_list_is_sorted_by_name_and_shows_counts(
    register: Register, client: httpx.AsyncClient, backends: Backends
) -> None:
    base = unique()
    names = [f"{base}-b", f"{base}-a"]
    for name in names:
        assert (await register(name=name, url=backends.urls["stateful"])).status_code == 201
    response = await client.get("/v1/gateways")
    assert response.status_code == 200
    items = response.json()["items"]
    all_names = [g["name"] for g in items]
    assert all_names == sorted(all_names)
    mine = [g for g in items if g["name"] in names]
    assert [g["name"] for g in mine] == sorted(names)
    for g in mine:
        assert set(g) == GATEWAY_FIELDS
        assert g["tool_count"] >= len(BACKEND_TOOLS)


async def test_get_gateway(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    response = await client.get(f"/v1/gateways/{gateway['id']}")
    assert response.status_code == 200, response.text
    assert response.json() == gateway


@pytest.mark.parametrize("ref", [str(uuid.uuid4()), "not-a-uuid", "12345"])
async def test_get_unknown_gateway_is_404(client: httpx.AsyncClient, ref: str) -> None:
    response = await client.get(f"/v1/gateways/{ref}")
    assert response.status_code == 404, response.text
    body = response.json()
    assert body["error"] == "not_found"
    assert ref in body["detail"]


# --- delete ---------------------------------------------------------------------------------


async def test_delete_removes_gateway_and_tools(
    client: httpx.AsyncClient, backends: Backends, worker: Worker
) -> None:
    name = unique()
    created = await client.post(
        "/v1/gateways", json={"name": name, "url": backends.urls["stateful"], "team": TEAM}
    )
    assert created.status_code == 201, created.text
    gateway_id = created.json()["id"]
    echo = await client.get(f"/v1/tools/{name}.echo")
    assert echo.status_code == 200
    echo_id = echo.json()["id"]

    deleted = await client.delete(f"/v1/gateways/{gateway_id}")
    assert deleted.status_code == 204
    assert deleted.content == b""

    assert (await client.get(f"/v1/gateways/{gateway_id}")).status_code == 404
    assert name not in await _listed_names(client)
    assert await _tool_names(client, name) == set()
    for ref in (f"{name}.echo", echo_id):
        gone = await client.get(f"/v1/tools/{ref}")
        assert gone.status_code == 404
        assert gone.json()["error"] == "not_found"
    call = await client.post(f"/v1/tools/{name}.echo/call", json={"arguments": {"text": "x"}})
    assert call.status_code == 404

    again = await client.delete(f"/v1/gateways/{gateway_id}")
    assert again.status_code == 404
    assert again.json()["error"] == "not_found"


async def test_delete_malformed_id_is_404(client: httpx.AsyncClient) -> None:
    response = await client.delete("/v1/gateways/not-a-uuid")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_name_is_reusable_after_delete(
    client: httpx.AsyncClient, register: Register, backends: Backends
) -> None:
    name = unique()
    first = await register(name=name, url=backends.urls["stateful"])
    assert first.status_code == 201
    assert (await client.delete(f"/v1/gateways/{first.json()['id']}")).status_code == 204
    second = await register(name=name, url=backends.urls["stateless"])
    assert second.status_code == 201, second.text
    assert second.json()["id"] != first.json()["id"]


# --- refresh --------------------------------------------------------------------------------


async def test_refresh_restores_adds_and_removes_tools(
    app: FastAPI, client: httpx.AsyncClient, gateway: dict[str, Any]
) -> None:
    gateway_id = uuid.UUID(gateway["id"])
    before = await client.get(f"/v1/tools/{gateway['name']}.sleep")
    assert before.status_code == 200
    original_description = (await client.get(f"/v1/tools/{gateway['name']}.add")).json()["description"]

    async with app.state.ctx.session_factory() as s:
        await s.delete(await s.scalar(select(Tool).where(Tool.gateway_id == gateway_id, Tool.name == "echo")))
        await s.execute(
            update(Tool).where(Tool.gateway_id == gateway_id, Tool.name == "add").values(description="stale")
        )
        await s.execute(
            update(Tool).where(Tool.gateway_id == gateway_id, Tool.name == "sleep").values(annotations=None)
        )
        s.add(Tool(gateway_id=gateway_id, name="ghost", input_schema={"type": "object"}))
        await s.commit()

    tampered = await _tool_names(client, gateway["name"])
    assert "echo" not in tampered and "ghost" in tampered
    assert (await client.get(f"/v1/tools/{gateway['name']}.add")).json()["description"] == "stale"

    response = await client.post(f"/v1/gateways/{gateway['id']}/refresh")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == gateway["id"]
    assert body["tool_count"] == gateway["tool_count"]
    assert instant(body["refreshed_at"]) > instant(gateway["refreshed_at"])

    names = await _tool_names(client, gateway["name"])
    assert "echo" in names
    assert "ghost" not in names
    assert BACKEND_TOOLS <= names
    add = (await client.get(f"/v1/tools/{gateway['name']}.add")).json()
    assert add["description"] == original_description == "Add two integers."
    sleep = (await client.get(f"/v1/tools/{gateway['name']}.sleep")).json()
    assert sleep["annotations"] == {"idempotentHint": True}
    # Unchanged rows keep their identity.
    assert sleep["id"] == before.json()["id"]


async def test_refresh_of_unchanged_gateway_keeps_tool_ids(
    client: httpx.AsyncClient, gateway: dict[str, Any]
) -> None:
    before = (await client.get("/v1/tools", params={"gateway": gateway["name"]})).json()["items"]
    response = await client.post(f"/v1/gateways/{gateway['id']}/refresh")
    assert response.status_code == 200, response.text
    after = (await client.get("/v1/tools", params={"gateway": gateway["name"]})).json()["items"]
    assert after == before


async def test_refresh_against_unreachable_backend_is_502_and_keeps_catalog(
    app: FastAPI, client: httpx.AsyncClient, gateway: dict[str, Any]
) -> None:
    before = await _tool_names(client, gateway["name"])
    async with app.state.ctx.session_factory() as s:
        await s.execute(
            update(Gateway)
            .where(Gateway.id == uuid.UUID(gateway["id"]))
            .values(url=f"http://127.0.0.1:{free_port()}/mcp")
        )
        await s.commit()
    response = await client.post(f"/v1/gateways/{gateway['id']}/refresh")
    assert response.status_code == 502, response.text
    assert response.json()["error"] == "backend_error"
    assert await _tool_names(client, gateway["name"]) == before
    shown = (await client.get(f"/v1/gateways/{gateway['id']}")).json()
    assert shown["tool_count"] == gateway["tool_count"]
    assert shown["refreshed_at"] == gateway["refreshed_at"]


@pytest.mark.parametrize("ref", [str(uuid.uuid4()), "nope"])
async def test_refresh_unknown_gateway_is_404(client: httpx.AsyncClient, ref: str) -> None:
    response = await client.post(f"/v1/gateways/{ref}/refresh")
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "not_found"


# --- transports -----------------------------------------------------------------------------

TRANSPORTS = {
    # kind: (transport, echo text answered for "hi")
    "stateful": ("streamable_http", "hi"),
    "stateless": ("streamable_http", "hi"),
    "sse": ("sse", "hi"),
    "legacy": ("streamable_http", "legacy:hi"),
}


@pytest.mark.parametrize("kind", list(TRANSPORTS))
async def test_every_transport_registers_and_calls(
    register: Register, client: httpx.AsyncClient, backends: Backends, kind: str
) -> None:
    transport, expected = TRANSPORTS[kind]
    name = unique(kind)
    response = await register(name=name, url=backends.urls[kind], transport=transport)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["transport"] == transport
    assert body["status"] == "active"
    if kind == "legacy":
        assert body["protocol_version"] == "2025-06-18"
        assert body["server_name"] == "legacy-backend"
        assert body["server_version"] == "0.9"
        assert (body["tool_count"], body["resource_count"], body["prompt_count"]) == (1, 0, 0)
        assert await _tool_names(client, name) == {"echo"}
    else:
        assert body["protocol_version"] and not body["protocol_version"].startswith("2025-")
        assert body["server_name"] == "mcpq-test-backend"
        assert BACKEND_TOOLS <= await _tool_names(client, name)

    call = await client.post(f"/v1/tools/{name}.echo/call", json={"arguments": {"text": "hi"}})
    assert call.status_code == 200, call.text
    result = call.json()
    assert result["status"] == "completed"
    assert result["result"]["isError"] is False
    assert result["result"]["content"] == [{"type": "text", "text": expected}]


@pytest.mark.parametrize("host", ["127.0.0.2", "::1"])
async def test_ssrf_guard_refuses_addresses_outside_the_allowlist(
    register: Register, settings: Settings, host: str
) -> None:
    """The tests' allowlist is 127.0.0.1/32: other loopback addresses are refused with 422, and
    nothing connects to them (a listener there sees no connection)."""
    assert settings.allowed_backend_networks == "127.0.0.1/32"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.bind((host, 0))
    except OSError:
        listener.close()
        pytest.skip(f"{host} is not available on this machine")
    with listener:
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        url = f"http://[{host}]:{port}/mcp" if family == socket.AF_INET6 else f"http://{host}:{port}/mcp"
        response = await register(name=unique(), url=url)
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "validation_error"
        assert "MCPQ_ALLOWED_BACKEND_NETWORKS" in response.json()["detail"]
        with pytest.raises(BlockingIOError):
            listener.accept()


async def test_ssrf_guard_resolves_names(register: Register, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name is judged by what it resolves to, not by how it looks."""

    async def resolve(host: str, port: int, **kwargs: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolve)
    response = await register(name=unique(), url="http://innocent.example/mcp")
    assert response.status_code == 422, response.text
    assert "metadata" in response.json()["detail"]
