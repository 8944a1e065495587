"""The HTTP transport under every pooled MCP session (streamable HTTP): the SDK's httpx2 client on
aiohttp's connection pool (`AiohttpTransport`: it costs half of httpx2's own transport in CPU).

It changes two things the SDK (mcp 2.3, `mcp.client.streamable_http`) does with the connection:

- **Reuse.** `StreamableHTTPTransport._handle_sse_response` closes a POST's `text/event-stream`
  body as soon as the JSON-RPC response event has arrived, before the chunk that ends the body
  has been read. The pool then sees a response that did not end and closes the TCP connection
  instead of pooling it: one new connection (and one TIME-WAIT socket) per call against any
  server that answers in SSE (protocol 2025-11-25 and older, the Node reference server). The
  server ends the body right after its answer, so closing here reads on for a moment first.
- **Failure of one request.** The SDK runs each request's POST as a task in the session's task
  group; when that POST raises (connection refused, reset, closed mid-answer), the task group is
  cancelled and the whole session ends, failing every call in flight on it (up to
  `mcp_session_max_calls`). Here a POST's transport error becomes an HTTP 502 whose JSON body is
  a JSON-RPC error, which the SDK hands to that one request's caller. The error's `data` says
  whether the request can have reached the server (`transport_failure` reads it back).

And it adds two. With OAuth client credentials (workers/oauth.py), every request carries the
gateway's bearer token, and a 401 is answered once with a fresh token; a POST that cannot be
authorized (no token from the token endpoint, or a fresh one refused too) becomes a JSON-RPC
error marked as an auth failure for that one request, and the session stays up. With tracing
on, a request whose `_meta` carries a W3C trace context (put there by workers/tasks.py) sends it
as the HTTP `traceparent`/`tracestate` headers too, for backends and proxies that read the
header rather than `_meta`. Done here from the request itself because the SDK sends each POST
from a task of its own, outside the caller's context.
"""

from __future__ import annotations

import functools
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Self

import aiohttp
import anyio
import httpx2
import yarl
from mcp import MCPError
from mcp.types import CONNECTION_CLOSED, INTERNAL_ERROR

from shared import tracing
from shared.backend_errors import AUTH_MARK, BackendAuthError
from workers.oauth import Bearer

# How long, and how much, a closed POST body is read on before giving up on reusing its connection.
# The rest of a finished SSE answer is a few bytes already on their way; a server that keeps the
# stream open past its answer costs this delay (in the SDK's POST task, not the caller's).
DRAIN_TIMEOUT_S = 1.0
DRAIN_MAX_BYTES = 64 * 1024

# The longest response header line taken from a backend (aiohttp's default is 8 KiB).
HEADER_LINE_MAX_BYTES = 64 * 1024

# Marks the JSON-RPC errors this transport makes, so they are told apart from a server's own.
FAILURE_MARK = "mcpq.transport"

# Errors raised before a byte of the request left: the server cannot have seen it.
NOT_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)


@dataclass(frozen=True)
class TransportFailure:
    """A request's HTTP exchange failed; `sent` is False only when the server cannot have seen it.
    `method` is the failed request's JSON-RPC method ("" if unknown)."""

    sent: bool
    reason: str
    method: str = ""


def transport_failure(exc: MCPError) -> TransportFailure | None:
    """The failure this transport reported through `exc`, or None for an error of the server's."""
    data = exc.data
    if exc.code != CONNECTION_CLOSED or not isinstance(data, dict) or data.get("mark") != FAILURE_MARK:
        return None
    method = str(data.get("method", ""))
    return TransportFailure(sent=bool(data.get("sent")), reason=exc.message, method=method)


def request_method(request: httpx2.Request) -> str:
    try:
        message = json.loads(request.content)
    except (ValueError, httpx2.RequestNotRead):
        return ""
    return str(message.get("method", "")) if isinstance(message, dict) else ""


def copy_trace_headers(request: httpx2.Request) -> None:
    """Send the trace context in the request's `_meta` as HTTP headers as well."""
    try:
        body = request.content
    except httpx2.RequestNotRead:
        return
    if b'"traceparent"' not in body:  # the cheap test first: most bodies have none
        return
    try:
        message = json.loads(body)
    except ValueError:
        return
    params = message.get("params") if isinstance(message, dict) else None
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict):
        return
    for key in tracing.TRACE_KEYS:
        value = meta.get(key)
        if isinstance(value, str):
            request.headers[key] = value


def failure_response(request: httpx2.Request, exc: httpx2.TransportError) -> httpx2.Response:
    sent = not isinstance(exc, NOT_SENT)
    return error_response(
        request,
        {
            "code": CONNECTION_CLOSED,
            "message": f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
            "data": {"mark": FAILURE_MARK, "sent": sent, "method": request_method(request)},
        },
    )


def auth_failure_response(request: httpx2.Request, exc: BackendAuthError) -> httpx2.Response:
    # Not CONNECTION_CLOSED: the session is fine, only this request could not be authorized.
    error = {"code": INTERNAL_ERROR, "message": str(exc), "data": {"mark": AUTH_MARK}}
    return error_response(request, error)


def error_response(request: httpx2.Request, error: dict[str, Any]) -> httpx2.Response:
    # The SDK puts the request's own id on the error it finds here.
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode()
    return httpx2.Response(502, headers={"content-type": "application/json"}, content=body, request=request)


class DrainOnClose(httpx2.AsyncByteStream):
    """A response body whose `aclose` first reads what is left of it (bounded), then closes it."""

    def __init__(self, inner: httpx2.AsyncByteStream) -> None:
        self._inner = inner
        # One iterator for the reader and for the drain, so the drain resumes where reading stopped.
        self._chunks = inner.__aiter__()
        self._ended = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk
        self._ended = True

    async def aclose(self) -> None:
        try:
            if not self._ended:
                await self._drain()
        finally:
            await self._inner.aclose()

    async def _drain(self) -> None:
        left = DRAIN_MAX_BYTES
        with anyio.move_on_after(DRAIN_TIMEOUT_S):
            try:
                async for chunk in self._chunks:
                    left -= len(chunk)
                    if left < 0:
                        return
            except httpx2.TransportError:
                return  # the connection broke: closing it is all that is left to do
        self._ended = True


# aiohttp's errors as the httpx2 errors the SDK, `failure_response` and shared/backend_errors read.
# Order matters: the first match wins (a connect timeout is also an OSError, say).
_AS_HTTPX: tuple[tuple[type[BaseException], type[httpx2.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx2.ConnectTimeout),  # no connection, or no pool slot, in time
    (aiohttp.ClientConnectorError, httpx2.ConnectError),  # refused, unreachable, DNS, TLS handshake
    (aiohttp.SocketTimeoutError, httpx2.ReadTimeout),
    (aiohttp.ServerDisconnectedError, httpx2.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx2.RemoteProtocolError),  # the body ended early or was malformed
    (aiohttp.ClientResponseError, httpx2.RemoteProtocolError),  # an answer that is not HTTP/1.x
    (aiohttp.ClientConnectionResetError, httpx2.WriteError),
    (aiohttp.ClientOSError, httpx2.ReadError),
)


def as_httpx_error(exc: aiohttp.ClientError | TimeoutError) -> httpx2.TransportError:
    for aio_type, httpx_type in _AS_HTTPX:
        if isinstance(exc, aio_type):
            return httpx_type(str(exc) or type(exc).__name__)
    if isinstance(exc, TimeoutError):
        return httpx2.ReadTimeout(str(exc) or "timed out")
    return httpx2.TransportError(f"{type(exc).__name__}: {exc}")


# Each pure and called per request with the few values a worker's sessions use: made once each.
@functools.lru_cache(maxsize=256)
def aiohttp_url(url: str) -> yarl.URL:
    """An httpx2 URL (already encoded: no requoting) as aiohttp takes it."""
    return yarl.URL(url, encoded=True)


@functools.lru_cache(maxsize=64)
def aiohttp_timeout(
    connect: float | None = None,
    read: float | None = None,
    write: float | None = None,
    pool: float | None = None,
) -> aiohttp.ClientTimeout:
    """httpx2's per-request timeouts in aiohttp's terms. httpx2's pool timeout is the wait for a
    free connection, which aiohttp counts in `connect` together with connecting; aiohttp has no
    write timeout."""
    return aiohttp.ClientTimeout(
        total=None,
        connect=None if pool is None or connect is None else pool + connect,
        sock_connect=connect,
        sock_read=read,
    )


class AiohttpBody(httpx2.AsyncByteStream):
    """An aiohttp response body as httpx2 reads it. Closing it hands the connection back to
    aiohttp's pool when the body was read to its end, and closes the connection otherwise."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise as_httpx_error(exc) from exc

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """httpx2's transport interface on aiohttp's HTTP/1.1 client and connection pool.

    The SDK takes an `httpx2.AsyncClient`, and the client takes any transport. httpx2's own
    (httpcore2 and the pure-Python h11) cost 1.4-1.8 ms of CPU per echo POST at 100 concurrent
    POSTs here, and this one 0.65-0.87 ms (aiohttp parses HTTP in C): a worker's CPU per echo call
    fell by a fifth (bench/load.py, side by side). The request goes out as httpx2 built it
    (headers, body); the body comes back as read, with no decoding (httpx2 decodes). A connection
    the server closed while idle leaves aiohttp's pool when the event loop sees the close, before
    any request can be sent on it."""

    def __init__(self, ssl_context: ssl.SSLContext, max_connections: int, keepalive_s: float) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                ssl=ssl_context, limit=max_connections, limit_per_host=0, keepalive_timeout=keepalive_s
            ),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),  # httpx2 keeps the cookies
            requote_redirect_url=False,
            # httpx2/h11 take header lines of any length up to 100 KiB; aiohttp's default is 8 KiB.
            max_line_size=HEADER_LINE_MAX_BYTES,
            max_field_size=HEADER_LINE_MAX_BYTES,
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        content = await request.aread()
        try:
            response = await self._session.request(
                request.method,
                aiohttp_url(str(request.url)),
                headers=request.headers.multi_items(),
                data=content or None,
                allow_redirects=False,  # httpx2 (the SDK's `stream_within_origin`) decides
                timeout=aiohttp_timeout(**request.extensions.get("timeout", {})),
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise as_httpx_error(exc) from exc
        return httpx2.Response(
            response.status,
            headers=response.raw_headers,
            stream=AiohttpBody(response),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    async def aclose(self) -> None:
        await self._session.close()


class BackendTransport(httpx2.AsyncBaseTransport):
    """Wraps the pooled transport for POSTs (see the module doc); other methods pass through:
    the session's GET stream is long-lived by design, and the SDK handles its failures itself."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, bearer: Bearer | None = None) -> None:
        self._inner = inner
        self._bearer = bearer

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method != "POST":
            return await self._send(request)
        if tracing.enabled():
            copy_trace_headers(request)
        try:
            response = await self._send(request)
        except httpx2.TransportError as exc:
            return failure_response(request, exc)
        except BackendAuthError as exc:
            return auth_failure_response(request, exc)
        if isinstance(response.stream, httpx2.AsyncByteStream):
            response.stream = DrainOnClose(response.stream)
        return response

    async def _send(self, request: httpx2.Request) -> httpx2.Response:
        if self._bearer is None:
            return await self._inner.handle_async_request(request)
        return await self._bearer.send(request, self._inner.handle_async_request)

    async def aclose(self) -> None:
        await self._inner.aclose()
