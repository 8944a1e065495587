"""Errors that say what to change: each mistake a new user made, and the answer it now gets."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

JSON_HINT = "send the body as JSON with Content-Type: application/json"


@pytest.mark.parametrize(
    ("headers", "sent"),
    [
        ({}, "no Content-Type"),
        ({"content-type": "text/plain"}, "text/plain"),
        ({"content-type": "application/x-www-form-urlencoded"}, "application/x-www-form-urlencoded"),
    ],
)
async def test_body_without_json_content_type_is_415(
    client: httpx.AsyncClient, headers: dict[str, str], sent: str
) -> None:
    response = await client.post(
        "/v1/tools/gw.echo/call", content=b'{"arguments": {"text": "x"}}', headers=headers
    )
    assert response.status_code == 415, response.text
    assert response.json() == {"error": "unsupported_media_type", "detail": f"{JSON_HINT} (got {sent})"}


async def test_json_with_charset_is_still_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/gateways",
        content=b'{"pad": 1}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 422, response.text
    assert {"path": "body/pad", "message": "unknown field 'pad'"} in response.json()["errors"]


async def test_missing_body_says_a_json_body_is_needed(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/tools/gw.echo/call")
    assert response.status_code == 422, response.text
    message = f"this request needs a JSON body ({{}} if there is nothing to set); {JSON_HINT}"
    assert response.json() == {
        "error": "validation_error",
        "detail": f"body: {message}",
        "errors": [{"path": "body", "message": message}],
    }


async def test_body_that_is_not_utf8_is_422_not_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/gateways", content=b'{"name": "\xff"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    message = "the body is not UTF-8 (byte 10); send JSON text encoded as UTF-8"
    assert response.json() == {
        "error": "validation_error",
        "detail": f"body: {message}",
        "errors": [{"path": "body", "message": message}],
    }


@pytest.mark.parametrize(
    ("path", "body", "item"),
    [
        ("/v1/tools/gw.echo/call", {"text": "hi"}, "tool"),
        ("/v1/tools/gw.echo/jobs", {"text": "hi"}, "tool"),
        ("/v1/prompts/gw.greet/render", {"name": "Ada"}, "prompt"),
        ("/v1/prompts/gw.greet/jobs", {"name": "Ada"}, "prompt"),
    ],
)
async def test_arguments_without_their_wrapper_get_a_hint(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], item: str
) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == 422, response.text
    field = next(iter(body))
    message = f'unknown field {field!r}; put the {item}\'s arguments under "arguments": {{...}}'
    assert response.json() == {
        "error": "validation_error",
        "detail": f"body/{field}: {message}",
        "errors": [{"path": f"body/{field}", "message": message}],
    }


async def test_unknown_field_elsewhere_gets_no_arguments_hint(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/resources/gw:demo://readme/read", json={"text": "hi"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == "body/text: unknown field 'text'"


async def test_bare_tool_name_gets_the_gateway_form(
    client: httpx.AsyncClient, gateway: dict[str, Any]
) -> None:
    response = await client.post("/v1/tools/echo/call", json={"arguments": {"text": "hi"}})
    assert response.status_code == 404, response.text
    assert response.json() == {
        "error": "not_found",
        "detail": "tool 'echo' not found; refer to it by its id or as {gateway}.echo "
        "(GET /v1/tools lists them)",
    }
    # The form it names works.
    named = await client.post(f"/v1/tools/{gateway['name']}.echo/call", json={"arguments": {"text": "hi"}})
    assert named.status_code == 200, named.text


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/v1/prompts/greet", "prompt 'greet' not found; refer to it by its id or as {gateway}.greet"),
        ("/v1/resources/readme", "resource 'readme' not found; refer to it by its id or as {gateway}:readme"),
    ],
)
async def test_bare_names_of_other_kinds_get_the_form_too(
    client: httpx.AsyncClient, path: str, detail: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 404, response.text
    assert response.json()["detail"].startswith(detail + " (GET /v1/")


@pytest.mark.parametrize("ref", ["nogateway.echo", str(uuid.uuid4())])
async def test_a_ref_in_the_right_form_gets_no_hint(client: httpx.AsyncClient, ref: str) -> None:
    response = await client.get(f"/v1/tools/{ref}")
    assert response.status_code == 404, response.text
    assert response.json() == {"error": "not_found", "detail": f"tool {ref!r} not found"}


# --- the MCP endpoint's refusals are JSON errors too ----------------------------------------------
INIT = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


async def test_mcp_wrong_host_is_json_421(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"/v1/servers/{uuid.uuid4()}/mcp", json=INIT, headers={"Host": "evil.example.com"}
    )
    assert response.status_code == 421, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == "misdirected_request"
    assert "MCPQ_MCP_ALLOWED_HOSTS" in body["detail"]


async def test_mcp_wrong_origin_is_json_403(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"/v1/servers/{uuid.uuid4()}/mcp",
        json=INIT,
        headers={"Host": "localhost", "Origin": "http://evil.example.com"},
    )
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"] == "forbidden"
    assert "MCPQ_MCP_ALLOWED_ORIGINS" in body["detail"]


async def test_mcp_post_without_json_is_json_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"/v1/servers/{uuid.uuid4()}/mcp",
        content=b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}',
        headers={"Host": "localhost", "content-type": "text/plain"},
    )
    assert response.status_code == 415, response.text
    assert response.json() == {
        "error": "unsupported_media_type",
        "detail": "send MCP messages as JSON with Content-Type: application/json",
    }


async def test_mcp_allowed_host_passes_the_check(client: httpx.AsyncClient) -> None:
    """The same request from an allowed host gets past the check (to the server lookup: 404)."""
    response = await client.post(f"/v1/servers/{uuid.uuid4()}/mcp", json=INIT, headers={"Host": "localhost"})
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "not_found"
