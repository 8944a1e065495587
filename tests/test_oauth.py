"""OAuth 2.1 client credentials for HTTP backends, against a token endpoint and a backend that
checks the bearer (tests/backends.py OAuthServer), both on loopback.

Each test asks for its own `scope`, which is part of the worker's token cache key: what one test
cached never serves another.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
from arq.constants import result_key_prefix
from cryptography.fernet import Fernet
from fastapi import FastAPI
from redis.asyncio import Redis

from shared.backend_errors import BackendAuthError
from shared.config import Settings
from shared.gateways import service as gateway_service
from shared.security import SecretBox
from tests.backends import Backends, OAuthServer
from tests.conftest import Register, unique
from tests.test_secrets import _every_value_in_redis, _raw_gateway_row
from workers.oauth import ClientCredentials, TokenSource


@pytest.fixture
def oauth(backends: Backends) -> OAuthServer:
    assert backends.oauth is not None
    backends.oauth.reset()
    return backends.oauth


def token_url(backends: Backends) -> str:
    return backends.urls["oauth"].removesuffix("/mcp") + "/token"


def auth_body(backends: Backends, oauth: OAuthServer, **overrides: Any) -> dict[str, Any]:
    return {
        "type": "oauth2_client_credentials",
        "token_url": token_url(backends),
        "client_id": oauth.client_id,
        "client_secret": oauth.client_secret,
        "scope": f"mcp:{uuid.uuid4().hex[:8]}",
        **overrides,
    }


async def call_echo(client: httpx.AsyncClient, gateway: dict[str, Any], text: str) -> httpx.Response:
    return await client.post(f"/v1/tools/{gateway['name']}.echo/call", json={"arguments": {"text": text}})


async def oauth_gateway(register: Register, backends: Backends, oauth: OAuthServer) -> dict[str, Any]:
    response = await register(url=backends.urls["oauth"], auth=auth_body(backends, oauth))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


# --- the worker's token source, alone ------------------------------------------------------------


@pytest.fixture
async def source(settings: Settings) -> AsyncIterator[TokenSource]:
    source = TokenSource(settings.allowed_networks, 5)
    yield source
    await source.close()


def own_client(backends: Backends, oauth: OAuthServer) -> tuple[str, ClientCredentials]:
    """Credentials with a scope of their own, and that scope (to count what it was issued)."""
    scope = unique("s")
    return scope, ClientCredentials(token_url(backends), oauth.client_id, oauth.client_secret, scope=scope)


async def test_concurrent_requests_share_one_fetch_and_a_stale_token_one_refetch(
    backends: Backends, oauth: OAuthServer, source: TokenSource
) -> None:
    scope, creds = own_client(backends, oauth)
    tokens = await asyncio.gather(*(source.token(creds) for _ in range(50)))
    issued = oauth.issued_for(scope)
    assert len(issued) == 1 and set(tokens) == {issued[0]}
    assert {"grant_type": "client_credentials", "scope": scope} in oauth.forms
    # Fifty requests refused with the same token: one new token for all of them.
    fresh = await asyncio.gather(*(source.token(creds, stale=tokens[0]) for _ in range(50)))
    issued = oauth.issued_for(scope)
    assert len(issued) == 2 and set(fresh) == {issued[1]}
    # Another secret is another client: it never gets the cached token.
    wrong = ClientCredentials(token_url(backends), oauth.client_id, "not-the-secret", scope=scope)
    with pytest.raises(BackendAuthError, match="invalid_client") as refused:
        await source.token(wrong)
    assert token_url(backends) in str(refused.value) and "not-the-secret" not in str(refused.value)


async def test_a_token_fetched_for_callers_who_gave_up_is_still_kept(
    backends: Backends, oauth: OAuthServer, source: TokenSource
) -> None:
    # Every caller waiting on a fetch timed out: the fetch goes on (shielded) and the token it
    # brings serves the next caller, rather than being thrown away and fetched again.
    scope, creds = own_client(backends, oauth)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(source.token(creds), timeout=0.0001)
    for _ in range(200):
        if oauth.issued_for(scope):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # the fetch's answer is read and parsed
    assert len(oauth.issued_for(scope)) == 1
    assert await source.token(creds) == oauth.issued_for(scope)[0]
    assert len(oauth.issued_for(scope)) == 1


async def test_token_endpoint_outside_the_allowlist_is_refused(source: TokenSource) -> None:
    with pytest.raises(BackendAuthError, match="private address"):
        await source.token(ClientCredentials("http://10.1.2.3/token", "c", "s"))


# --- through the gateway -----------------------------------------------------------------------


async def test_token_fetched_once_for_many_calls(
    client: httpx.AsyncClient, register: Register, backends: Backends, oauth: OAuthServer
) -> None:
    gateway = await oauth_gateway(register, backends, oauth)
    assert gateway["tool_count"] > 0  # discovery ran with the token
    scope = gateway["auth"]["scope"]
    calls = await asyncio.gather(*(call_echo(client, gateway, f"t{i}") for i in range(30)))
    assert [c.status_code for c in calls] == [200] * 30, [c.text for c in calls if c.status_code != 200]
    assert len(oauth.issued_for(scope)) == 1
    assert oauth.refused_for(scope) == 0


async def test_the_sse_transport_sends_the_token_and_replaces_a_refused_one(
    client: httpx.AsyncClient, register: Register, backends: Backends, oauth: OAuthServer
) -> None:
    created = await register(url=backends.urls["oauth_sse"], transport="sse", auth=auth_body(backends, oauth))
    assert created.status_code == 201, created.text
    gateway = created.json()
    scope = gateway["auth"]["scope"]
    assert (await call_echo(client, gateway, "a")).status_code == 200
    assert len(oauth.issued_for(scope)) == 1
    oauth.revoke_all()
    answer = await call_echo(client, gateway, "b")
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["content"][0]["text"] == "b"
    assert len(oauth.issued_for(scope)) == 2 and oauth.refused_for(scope) >= 1


async def test_token_renewed_before_it_expires(
    client: httpx.AsyncClient, register: Register, backends: Backends, oauth: OAuthServer
) -> None:
    # The worker renews a tenth of the lifetime (0.4 s) before expiry: the sleep ends past that
    # point. (Between the token endpoint's clock and the worker's there are 0.4 s to spare.)
    oauth.reset(expires_in=4)
    gateway = await oauth_gateway(register, backends, oauth)
    scope = gateway["auth"]["scope"]
    assert (await call_echo(client, gateway, "a")).status_code == 200
    assert len(oauth.issued_for(scope)) == 1
    await asyncio.sleep(3.9)
    assert (await call_echo(client, gateway, "b")).status_code == 200
    assert len(oauth.issued_for(scope)) == 2
    assert oauth.refused_for(scope) == 0  # renewed before the backend had to refuse it


async def test_a_refused_token_is_replaced_once_and_the_call_sent_again(
    client: httpx.AsyncClient, register: Register, backends: Backends, oauth: OAuthServer
) -> None:
    gateway = await oauth_gateway(register, backends, oauth)
    scope = gateway["auth"]["scope"]
    assert (await call_echo(client, gateway, "a")).status_code == 200
    oauth.revoke_all()  # the authorization server revoked it early
    answer = await call_echo(client, gateway, "b")
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["content"][0]["text"] == "b"
    assert len(oauth.issued_for(scope)) == 2 and oauth.refused_for(scope) == 1
    oauth.revoke_all()
    calls = await asyncio.gather(*(call_echo(client, gateway, f"c{i}") for i in range(10)))
    assert [c.status_code for c in calls] == [200] * 10
    assert len(oauth.issued_for(scope)) == 3  # many requests refused at once: one new token


async def test_token_endpoint_refusal_is_a_typed_error_without_the_secret(
    client: httpx.AsyncClient, register: Register, backends: Backends, oauth: OAuthServer
) -> None:
    wrong = auth_body(backends, oauth, client_secret=f"wrong-{uuid.uuid4().hex}")
    refused = await register(url=backends.urls["oauth"], auth=wrong)
    assert refused.status_code == 502, refused.text
    detail = refused.json()["detail"]
    assert token_url(backends) in detail and "invalid_client" in detail
    assert wrong["client_secret"] not in refused.text

    gateway = await oauth_gateway(register, backends, oauth)
    assert (await call_echo(client, gateway, "a")).status_code == 200
    secret = oauth.client_secret
    oauth.client_secret = "rotated-at-the-idp"  # the gateway's secret no longer works
    oauth.revoke_all()
    try:
        failed = await call_echo(client, gateway, "b")
    finally:
        oauth.client_secret = secret
    assert failed.status_code == 502, failed.text
    assert failed.json()["error"] == "backend_auth"
    assert token_url(backends) in failed.json()["detail"] and "invalid_client" in failed.json()["detail"]
    assert secret not in failed.text


async def test_a_fresh_token_refused_too_is_a_typed_error(
    client: httpx.AsyncClient, register: Register, backends: Backends, oauth: OAuthServer
) -> None:
    gateway = await oauth_gateway(register, backends, oauth)
    scope = gateway["auth"]["scope"]
    assert (await call_echo(client, gateway, "a")).status_code == 200
    oauth.refuse_all = True
    try:
        failed = await call_echo(client, gateway, "b")
    finally:
        oauth.refuse_all = False
    assert failed.status_code == 502, failed.text
    assert failed.json()["error"] == "backend_auth"
    assert "401 Unauthorized to a fresh token from " + token_url(backends) in failed.json()["detail"]
    assert len(oauth.issued_for(scope)) == 2  # one new token tried, not one per attempt
    # The session was not broken by it: the next call goes through on it.
    assert (await call_echo(client, gateway, "c")).status_code == 200


async def test_a_gateway_shows_its_last_success_and_last_error(
    client: httpx.AsyncClient, register: Register, backends: Backends, oauth: OAuthServer
) -> None:
    gateway = await oauth_gateway(register, backends, oauth)
    assert gateway["last_error"] is None
    assert (await call_echo(client, gateway, "a")).status_code == 200
    shown = await _until(client, gateway, lambda g: g["last_seen_ok_at"] is not None)
    assert shown["last_error"] is None and shown["last_error_at"] is None
    ok_at = datetime.fromisoformat(shown["last_seen_ok_at"])

    secret = oauth.client_secret
    oauth.client_secret = "rotated-at-the-idp"
    oauth.revoke_all()
    try:
        assert (await call_echo(client, gateway, "b")).status_code == 502
    finally:
        oauth.client_secret = secret
    shown = await _until(client, gateway, lambda g: g["last_error"] is not None)
    assert "invalid_client" in shown["last_error"] and token_url(backends) in shown["last_error"]
    assert datetime.fromisoformat(shown["last_error_at"]) >= ok_at
    listed = {g["id"]: g for g in (await client.get("/v1/gateways")).json()["items"]}
    assert listed[gateway["id"]]["last_error"] == shown["last_error"]


async def _until(
    client: httpx.AsyncClient, gateway: dict[str, Any], done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The gateway once `done` holds (workers write outcomes in the background)."""
    deadline = time.monotonic() + 5
    while True:
        shown: dict[str, Any] = (await client.get(f"/v1/gateways/{gateway['id']}")).json()
        if done(shown) or time.monotonic() > deadline:
            return shown
        await asyncio.sleep(0.05)


async def test_secret_is_never_stored_shown_or_logged_in_plain_text(
    app: FastAPI,
    client: httpx.AsyncClient,
    register: Register,
    backends: Backends,
    oauth: OAuthServer,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    auth = auth_body(backends, oauth, audience="https://backend.example")
    created = await register(url=backends.urls["oauth"], auth=auth)
    assert created.status_code == 201, created.text
    gateway = created.json()
    assert gateway["auth"] == {k: v for k, v in auth.items() if k != "client_secret"}
    call = await call_echo(client, gateway, "hi")
    assert call.status_code == 200, call.text
    assert oauth.forms[-1]["audience"] == "https://backend.example"
    secret, tokens = oauth.client_secret, list(oauth.issued)

    row = await asyncio.to_thread(_raw_gateway_row, database_url, gateway["id"])
    assert secret not in row and json.loads(row)["auth_enc"]
    redis: Redis = app.state.ctx.queue.redis
    stored = json.loads(await redis.get(result_key_prefix + call.json()["job_id"]) or b"{}")
    assert stored["a"][0]["backend"]["auth_enc"]  # the job carried it encrypted
    everything = await _every_value_in_redis(redis)
    for plain in (secret, *tokens):
        assert plain.encode() not in everything
    for path in ("/v1/gateways", f"/v1/gateways/{gateway['id']}", f"/v1/jobs/{call.json()['job_id']}"):
        shown = await client.get(path)
        assert shown.status_code == 200 and secret not in shown.text
    for answer in (
        await client.post(f"/v1/gateways/{gateway['id']}/refresh"),
        await client.patch(f"/v1/gateways/{gateway['id']}", json={"auth": auth}),
    ):
        assert answer.status_code == 200, answer.text
        assert secret not in answer.text and "client_secret" not in answer.text
    for plain in (secret, *oauth.issued):
        assert plain not in caplog.text


@pytest.mark.parametrize(
    ("token_url_", "message"),
    [("http://10.0.0.7/token", "private address"), ("http://169.254.169.254/token", "metadata")],
)
async def test_token_url_must_pass_the_ssrf_guard(
    register: Register, backends: Backends, oauth: OAuthServer, token_url_: str, message: str
) -> None:
    response = await register(
        url=backends.urls["oauth"], auth=auth_body(backends, oauth, token_url=token_url_)
    )
    assert response.status_code == 422, response.text
    assert "auth.token_url" in response.json()["detail"] and message in response.json()["detail"]


@pytest.mark.parametrize(
    "auth",
    [
        {"type": "basic", "token_url": "http://x/t", "client_id": "c", "client_secret": "s"},
        {
            "type": "oauth2_client_credentials",
            "token_url": "ftp://x/t",
            "client_id": "c",
            "client_secret": "s",
        },
        {"type": "oauth2_client_credentials", "token_url": "http://x/t", "client_id": "c"},
        {
            "type": "oauth2_client_credentials",
            "token_url": "http://x/t",
            "client_id": "",
            "client_secret": "s",
        },
        {
            "type": "oauth2_client_credentials",
            "token_url": "http://x/t",
            "client_id": "c",
            "client_secret": "s",
            "x": 1,
        },
    ],
)
async def test_bad_auth_is_422(register: Register, backends: Backends, auth: dict[str, Any]) -> None:
    response = await register(url=backends.urls["oauth"], auth=auth)
    assert response.status_code == 422, response.text


async def test_an_authorization_header_beside_auth_is_422(
    register: Register, backends: Backends, oauth: OAuthServer
) -> None:
    response = await register(
        url=backends.urls["oauth"], headers={"authorization": "Bearer x"}, auth=auth_body(backends, oauth)
    )
    assert response.status_code == 422, response.text
    assert "not both" in response.json()["detail"]


async def test_key_rotation_reencrypts_auth(
    app: FastAPI,
    register: Register,
    backends: Backends,
    oauth: OAuthServer,
    database_url: str,
    settings: Settings,
) -> None:
    gateway = await oauth_gateway(register, backends, oauth)
    old_key, new_key = settings.secret_keys, Fernet.generate_key().decode()
    sessions = app.state.ctx.session_factory
    before = json.loads(await asyncio.to_thread(_raw_gateway_row, database_url, gateway["id"]))["auth_enc"]
    await gateway_service.rotate_secrets(sessions, SecretBox(f"{new_key},{old_key}"))
    try:
        after = json.loads(await asyncio.to_thread(_raw_gateway_row, database_url, gateway["id"]))["auth_enc"]
        assert after != before
        assert SecretBox(new_key).open(after)["client_secret"] == oauth.client_secret
    finally:
        # Back to the key the running API and worker hold.
        await gateway_service.rotate_secrets(sessions, SecretBox(f"{old_key},{new_key}"))
