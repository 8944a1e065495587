"""OAuth 2.1 client credentials for HTTP backends: tokens fetched, cached and shared per worker.

A gateway's `auth` (decrypted by the session pool) names a token endpoint and a client. The
worker asks the endpoint for a token with the client credentials grant (RFC 6749 section 4.4: a
form-encoded POST, the client authenticated with HTTP Basic as section 2.3.1 says every server
must accept) and sends it to the backend as `Authorization: Bearer`.

- One token per client (token URL, client id, scope, audience, and the secret, so that a
  gateway with a wrong secret never borrows the token another one earned) for every session
  and discovery on this worker, kept until shortly before it expires.
- Concurrent requests that find no usable token wait for one fetch together.
- A backend's 401 makes the token stale: the next token is a fresh one (fetched once, however
  many requests saw the 401), and the request is sent again once.
- Failures raise `BackendAuthError` naming the token URL and the OAuth error code. Neither the
  secret nor a token is ever logged or put in a message.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx2

from shared.backend_errors import BackendAuthError
from shared.config import IPNetwork
from shared.gateways import netguard

# A token without `expires_in` is kept this long (or until the backend refuses it).
DEFAULT_LIFETIME_S = 3600.0
# A token is renewed this long before it expires: a tenth of its lifetime, at most this.
MAX_RENEW_MARGIN_S = 30.0


Send = Callable[[httpx2.Request], Awaitable[httpx2.Response]]


@dataclass(frozen=True)
class ClientCredentials:
    token_url: str
    client_id: str
    client_secret: str
    scope: str | None = None
    audience: str | None = None

    @classmethod
    def from_plain(cls, plain: dict[str, str]) -> ClientCredentials:
        """From a gateway's decrypted `auth` (shared/gateways/schemas.py OAuthClientCredentials)."""
        return cls(
            token_url=plain["token_url"],
            client_id=plain["client_id"],
            client_secret=plain["client_secret"],
            scope=plain.get("scope"),
            audience=plain.get("audience"),
        )

    @property
    def cache_key(self) -> tuple[str, ...]:
        secret = hashlib.sha256(self.client_secret.encode()).hexdigest()
        return (self.token_url, self.client_id, self.scope or "", self.audience or "", secret)

    def refusal(self, code: str, description: str = "") -> BackendAuthError:
        # A server may quote what it was sent: never let the secret through in its description.
        said = description.replace(self.client_secret, "***")[:300]
        detail = f"{code} ({said})" if said else code
        return BackendAuthError(
            f"the token endpoint {self.token_url} refused client {self.client_id!r}: {detail}"
        )


@dataclass(frozen=True)
class _Token:
    value: str
    renew_at: float  # monotonic


class TokenSource:
    """Every OAuth token of one worker process."""

    def __init__(self, allowed: tuple[IPNetwork, ...], timeout_s: float) -> None:
        self._allowed = allowed
        self._timeout_s = timeout_s
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._fetches: dict[tuple[str, ...], asyncio.Task[_Token]] = {}
        self._http: httpx2.AsyncClient | None = None

    async def token(self, creds: ClientCredentials, stale: str | None = None) -> str:
        """A usable token for `creds`; a fresh one if the cached one is `stale` (refused)."""
        key = creds.cache_key
        cached = self._tokens.get(key)
        if cached is not None and cached.value != stale and time.monotonic() < cached.renew_at:
            return cached.value
        fetch = self._fetches.get(key)
        if fetch is None:
            fetch = self._fetches[key] = asyncio.create_task(self._fetch(creds))
            fetch.add_done_callback(lambda done: self._fetched(key, done))
        # Shielded: one waiter giving up (its call timed out) must not cancel the others' fetch.
        token = await asyncio.shield(fetch)
        return token.value

    def _fetched(self, key: tuple[str, ...], fetch: asyncio.Task[_Token]) -> None:
        # The new token is cached in the same step that forgets the fetch: were it cached later
        # (by a resuming waiter), a request refused meanwhile would find neither and fetch again.
        self._fetches.pop(key, None)
        if not fetch.cancelled() and fetch.exception() is None:
            self._tokens[key] = fetch.result()

    async def close(self) -> None:
        for fetch in list(self._fetches.values()):
            fetch.cancel()
        if self._http is not None:
            await self._http.aclose()

    async def _fetch(self, creds: ClientCredentials) -> _Token:
        try:
            await netguard.check_url(creds.token_url, self._allowed)
        except netguard.RefusedAddress as exc:
            raise BackendAuthError(f"the token endpoint {creds.token_url} is refused: {exc}") from None
        form = {"grant_type": "client_credentials"}
        if creds.scope:
            form["scope"] = creds.scope
        if creds.audience:
            form["audience"] = creds.audience
        # RFC 6749 section 2.3.1: id and secret are form-encoded before they go into Basic.
        basic = httpx2.BasicAuth(quote(creds.client_id, safe=""), quote(creds.client_secret, safe=""))
        try:
            response = await self._client().post(
                creds.token_url, data=form, auth=basic, headers={"Accept": "application/json"}
            )
        except httpx2.HTTPError as exc:
            raise BackendAuthError(
                f"the token endpoint {creds.token_url} could not be reached ({type(exc).__name__})"
            ) from None
        return _parse(creds, response)

    def _client(self) -> httpx2.AsyncClient:
        if self._http is None:
            self._http = httpx2.AsyncClient(timeout=self._timeout_s, follow_redirects=False)
        return self._http


def _parse(creds: ClientCredentials, response: httpx2.Response) -> _Token:
    """The token in a token endpoint's answer (RFC 6749 sections 5.1 and 5.2)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise creds.refusal(f"HTTP {response.status_code}", "the answer is not a JSON object")
    if response.status_code != 200 or "error" in body:
        code = str(body.get("error") or f"HTTP {response.status_code}")
        raise creds.refusal(code, str(body.get("error_description") or ""))
    value, kind = body.get("access_token"), str(body.get("token_type", "bearer"))
    if not isinstance(value, str) or not value or kind.lower() != "bearer":
        raise creds.refusal("invalid_token_response", f"no bearer access_token (token_type {kind[:40]!r})")
    lifetime = body.get("expires_in")
    if not isinstance(lifetime, int | float) or lifetime <= 0:
        lifetime = DEFAULT_LIFETIME_S
    margin = min(MAX_RENEW_MARGIN_S, lifetime / 10)
    return _Token(value, time.monotonic() + lifetime - margin)


class Bearer:
    """One gateway's way to authorize a request: its credentials on the worker's token source."""

    def __init__(self, source: TokenSource, creds: ClientCredentials) -> None:
        self._source = source
        self.credentials = creds

    async def send(self, request: httpx2.Request, send: Send) -> httpx2.Response:
        """Send `request` with a token; after a 401, once more with a fresh one. A second 401 raises
        BackendAuthError (`send` is the transport's own `handle_async_request`)."""
        token = await self.authorize(request)
        response = await send(request)
        if response.status_code != 401:
            return response
        await response.aclose()
        await self.authorize(request, stale=token)
        response = await send(request)
        if response.status_code == 401:
            await response.aclose()
            raise self.refused()
        return response

    async def authorize(self, request: httpx2.Request, stale: str | None = None) -> str:
        token = await self._source.token(self.credentials, stale)
        request.headers["Authorization"] = f"Bearer {token}"
        return token

    def refused(self) -> BackendAuthError:
        return BackendAuthError(
            f"the backend answered 401 Unauthorized to a fresh token from {self.credentials.token_url} "
            f"(client {self.credentials.client_id!r}); are its scope and audience right for this backend?"
        )


class BearerAuth(httpx2.Auth):
    """`Bearer` as an httpx2 auth flow, for the SSE transport (whose client the SDK makes)."""

    def __init__(self, bearer: Bearer) -> None:
        self._bearer = bearer

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        token = await self._bearer.authorize(request)
        response = yield request
        if response.status_code == 401:
            await self._bearer.authorize(request, stale=token)
            yield request
