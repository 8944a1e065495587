"""HTTP edges every route shares: bearer auth, the body size cap, malformed JSON, health and readiness."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from shared.config import Settings

SOME_ID = str(uuid.uuid4())

# Every /v1 route, with a body that would be valid, so only the missing credentials can fail it.
V1_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/gateways", {"name": "auth-probe", "url": "http://127.0.0.1:9/mcp"}),
    ("GET", "/v1/gateways", None),
    ("GET", f"/v1/gateways/{SOME_ID}", None),
    ("DELETE", f"/v1/gateways/{SOME_ID}", None),
    ("POST", f"/v1/gateways/{SOME_ID}/refresh", None),
    ("GET", "/v1/tools", None),
    ("GET", "/v1/tools/gw.echo", None),
    ("POST", "/v1/tools/gw.echo/call", {"arguments": {"text": "x"}}),
    ("POST", "/v1/tools/gw.echo/jobs", {"arguments": {"text": "x"}}),
    ("GET", "/v1/jobs/0123456789abcdef", None),
    ("DELETE", "/v1/jobs/0123456789abcdef", None),
    ("POST", "/v1/teams", {"name": "auth-probe"}),
    ("GET", "/v1/teams", None),
    ("GET", f"/v1/teams/{SOME_ID}", None),
    ("PATCH", f"/v1/teams/{SOME_ID}", {"description": "x"}),
    ("DELETE", f"/v1/teams/{SOME_ID}", None),
    ("POST", f"/v1/teams/{SOME_ID}/members", {"email": "a@b.example"}),
    ("GET", f"/v1/teams/{SOME_ID}/members", None),
    ("DELETE", f"/v1/teams/{SOME_ID}/members/a@b.example", None),
    ("POST", "/v1/tokens", {"name": "t", "team": SOME_ID, "role": "viewer"}),
    ("GET", "/v1/tokens", None),
    ("DELETE", f"/v1/tokens/{SOME_ID}", None),
]
ROUTE_IDS = [f"{method} {path}" for method, path, _ in V1_ROUTES]


@pytest.fixture
async def raw_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client without credentials that returns 500s as responses instead of raising."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://mcpq.test", timeout=30) as http:
        yield http


def _assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers.get("www-authenticate") == "Bearer"
    body = response.json()
    assert body["error"] == "unauthorized"
    assert isinstance(body["detail"], str) and body["detail"]


@pytest.mark.parametrize(("method", "path", "body"), V1_ROUTES, ids=ROUTE_IDS)
async def test_missing_bearer_is_401(
    raw_client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = await raw_client.request(method, path, json=body)
    _assert_unauthorized(response)
    assert response.json()["detail"] == "missing bearer token"


@pytest.mark.parametrize(("method", "path", "body"), V1_ROUTES, ids=ROUTE_IDS)
async def test_wrong_bearer_is_401(
    raw_client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = await raw_client.request(
        method, path, json=body, headers={"Authorization": "Bearer not-the-admin-token"}
    )
    _assert_unauthorized(response)
    assert response.json()["detail"] == "invalid token"


@pytest.mark.parametrize(
    "header",
    [
        "Basic dGVzdC1hZG1pbi10b2tlbg==",  # the right token, wrong scheme
        "Bearer",  # scheme without token
        "Bearer ",
        "test-admin-token",  # token without scheme
    ],
)
async def test_malformed_authorization_is_401(
    raw_client: httpx.AsyncClient, settings: Settings, header: str
) -> None:
    response = await raw_client.get("/v1/gateways", headers={"Authorization": header})
    _assert_unauthorized(response)


async def test_bearer_scheme_is_case_insensitive(raw_client: httpx.AsyncClient, settings: Settings) -> None:
    response = await raw_client.get(
        "/v1/gateways", headers={"Authorization": f"bearer {settings.admin_token}"}
    )
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["items"], list)


async def test_unauthenticated_request_creates_nothing(
    raw_client: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    name = f"noauth-{uuid.uuid4().hex[:8]}"
    response = await raw_client.post("/v1/gateways", json={"name": name, "url": "http://127.0.0.1:9/mcp"})
    _assert_unauthorized(response)
    listed = await client.get("/v1/gateways")
    assert listed.status_code == 200
    assert name not in {g["name"] for g in listed.json()["items"]}


async def test_health_needs_no_auth(raw_client: httpx.AsyncClient) -> None:
    response = await raw_client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_health_ignores_a_wrong_token(raw_client: httpx.AsyncClient) -> None:
    response = await raw_client.get("/health", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_reports_database_and_redis(raw_client: httpx.AsyncClient) -> None:
    response = await raw_client.get("/ready")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


async def test_body_over_limit_is_413(client: httpx.AsyncClient, settings: Settings) -> None:
    payload = (
        b'{"name": "big", "url": "http://127.0.0.1:9/mcp", "pad": "' + b"x" * settings.max_body_bytes + b'"}'
    )
    response = await client.post(
        "/v1/gateways", content=payload, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": "payload_too_large",
        "detail": f"request body exceeds {settings.max_body_bytes} bytes",
    }


async def test_body_over_limit_on_call_route_is_413(client: httpx.AsyncClient, settings: Settings) -> None:
    big = {"arguments": {"text": "x" * (settings.max_body_bytes + 1)}}
    response = await client.post("/v1/tools/gw.echo/call", json=big)
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "payload_too_large"


async def test_413_comes_before_auth(raw_client: httpx.AsyncClient, settings: Settings) -> None:
    response = await raw_client.post(
        "/v1/gateways",
        content=b"x" * (settings.max_body_bytes + 1),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


async def test_body_at_limit_is_not_413(client: httpx.AsyncClient, settings: Settings) -> None:
    """Exactly max_body_bytes passes the cap (and then fails validation: an unknown field)."""
    prefix, suffix = b'{"pad": "', b'"}'
    payload = prefix + b"x" * (settings.max_body_bytes - len(prefix) - len(suffix)) + suffix
    assert len(payload) == settings.max_body_bytes
    response = await client.post(
        "/v1/gateways", content=payload, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error"


async def test_streamed_body_over_limit_without_content_length_is_413(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    chunk = b"x" * 65_536
    chunks = settings.max_body_bytes // len(chunk) + 2

    async def stream() -> AsyncIterator[bytes]:
        for _ in range(chunks):
            yield chunk

    response = await client.post(
        "/v1/gateways", content=stream(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "payload_too_large"


@pytest.mark.parametrize(
    ("path", "content", "where", "reason"),
    [
        ("/v1/gateways", b'{"name": "x", "url": ', "character 21 (line 1, column 22)", "Expecting value"),
        (
            "/v1/gateways",
            b"{'name': 'single-quotes'}",
            "character 1 (line 1, column 2)",
            "Expecting property name enclosed in double quotes",
        ),
        (
            "/v1/tools/gw.echo/call",
            b'{"arguments": {"text": "x"},}',
            "character 28 (line 1, column 29)",
            "Expecting property name enclosed in double quotes",
        ),
        ("/v1/tools/gw.echo/jobs", b"not json at all", "character 0 (line 1, column 1)", "Expecting value"),
        (
            "/v1/tools/gw.echo/call",
            b'{\n  "arguments": {\n    "text": "x",\n  }\n}',
            "character 38 (line 4, column 3)",
            "Expecting property name enclosed in double quotes",
        ),
    ],
)
async def test_malformed_json_says_where(
    client: httpx.AsyncClient, path: str, content: bytes, where: str, reason: str
) -> None:
    """The position is named as a character position (with line and column), not as `body/30`."""
    response = await client.post(path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    message = f"invalid JSON at {where}: {reason}"
    assert response.json() == {
        "error": "validation_error",
        "detail": f"body: {message}",
        "errors": [{"path": "body", "message": message}],
    }


async def test_json_array_body_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/gateways", json=["not", "an", "object"])
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error"


async def test_unknown_route_is_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "Not Found"}


async def test_wrong_method_is_json_405(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/gateways")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    # RFC 9110: a 405 lists the methods the resource allows.
    assert response.headers["allow"] == "GET, POST"
