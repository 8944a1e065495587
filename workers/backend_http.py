"""The HTTP transport under every pooled MCP session (streamable HTTP), between the SDK and httpx2.

It changes two things the SDK (mcp 2.3, `mcp.client.streamable_http`) does with the connection:

- **Reuse.** `StreamableHTTPTransport._handle_sse_response` closes a POST's `text/event-stream`
  body as soon as the JSON-RPC response event has arrived, before the chunk that ends the body
  has been read. httpcore then sees a response that is not DONE and closes the TCP connection
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

import json
import select
import socket
import ssl
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Self

import anyio
import httpcore2
import httpx2
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


def socket_readable(sock: socket.socket | None) -> bool:
    """Whether a read on `sock` would return at once (data, or the b"" of a closed peer)."""
    if sock is None or sock.fileno() < 0:
        return True
    poll = select.poll()
    poll.register(sock, select.POLLIN)
    return bool(poll.poll(0))


class ProbedStream(httpcore2.AsyncNetworkStream):
    """An httpcore2 stream whose `is_readable` probe uses the raw socket found once.

    httpcore2's pool probes every idle connection on each request and each response close
    (`has_expired`), and anyio builds its whole socket-attribute map, with a getpeername() call,
    for every probe: 10 % of a worker's CPU at 100 concurrent echo calls (py-spy)."""

    def __init__(self, inner: httpcore2.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")

    # The `timeout` parameters are httpcore2's interface (ASYNC109 does not apply).
    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore2.AsyncNetworkStream:
        return ProbedStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return socket_readable(self._socket)
        return self._inner.get_extra_info(info)


class ProbedBackend(httpcore2.AsyncNetworkBackend):
    """httpcore2's anyio backend, with each stream wrapped in a `ProbedStream`."""

    def __init__(self) -> None:
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return ProbedStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        return ProbedStream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PooledTransport(httpx2.AsyncHTTPTransport):
    """httpx2's transport on a pool of `ProbedBackend` streams. httpx2 does not take a network
    backend, so the pool it made is replaced by one made the same way (no proxy) with it."""

    def __init__(self, ssl_context: ssl.SSLContext, limits: httpx2.Limits) -> None:
        super().__init__(verify=ssl_context, limits=limits)
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=ProbedBackend(),
        )


class BackendTransport(httpx2.AsyncBaseTransport):
    """Wraps httpx2's pooled transport for POSTs (see the module doc); other methods pass through:
    the session's GET stream is long-lived by design, and the SDK handles its failures itself."""

    def __init__(self, inner: httpx2.AsyncHTTPTransport, bearer: Bearer | None = None) -> None:
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
