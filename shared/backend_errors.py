"""Why a backend MCP server could not be used, said so that the person who registered it knows
what to change.

The SDK's own messages name neither what answered nor what to try ("Not Found", "Server
returned an error response", httpx's "Client error '404 Not Found' ... For more information
check: <MDN link>"), and it wraps them in ExceptionGroups. `explain` turns the exception into
(error type, message): `backend_unavailable` when nothing answered, `protocol_error` when
something answered that is not an MCP server at this URL and transport, `backend_auth` when the
gateway's OAuth token could not be had or was refused. It does no I/O.

What the SDK raises does not always carry the HTTP status (a streamable-HTTP POST refused with
405 or 401 arrives as "Server returned an error response"). A worker that installs a
`ResponseRecorder` as its httpx2 client's response hook passes what it recorded, and the message
then names the status too.
"""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

import httpx2
from mcp import MCPError
from mcp.types import INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR

UNAVAILABLE = "backend_unavailable"
PROTOCOL = "protocol_error"
AUTH = "backend_auth"

# Marks the JSON-RPC errors a worker's transport makes when a request could not be authorized
# (no token from the token endpoint, or the backend refused a fresh one): the request never
# reached the backend, and the session is still good.
AUTH_MARK = "mcpq.auth"


# The stand-ins the SDK's streamable-HTTP client puts in place of an HTTP answer it cannot use.
_NOT_FOUND = (METHOD_NOT_FOUND, "Not Found")
_ERROR_STATUS = (INTERNAL_ERROR, "Server returned an error response")
_CONTENT_TYPE = re.compile(r"^Unexpected content type: (?P<type>.*)$")
_SSE_CONTENT_TYPE = re.compile(r"got '(?P<type>[^']*)'")
_NOT_JSON_RPC = "Failed to parse JSON response"


class BackendFailure(Exception):
    """A failure already explained where it happened (a stdio server that would not start, say):
    `kind` and the message are what the caller sees."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class BackendAuthError(BackendFailure):
    """The gateway's OAuth token could not be had, or the backend refused a fresh one. The message
    names the token URL and the OAuth error code, never a secret."""

    def __init__(self, message: str) -> None:
        super().__init__(AUTH, message)


def auth_failure(exc: MCPError) -> str | None:
    """The message of an authorization failure a worker's transport reported through `exc`."""
    data = exc.data
    return exc.message if isinstance(data, dict) and data.get("mark") == AUTH_MARK else None


@dataclass(frozen=True)
class Reached:
    """What the backend's URL answered: an HTTP status and its Content-Type."""

    status: int
    content_type: str = ""

    def __str__(self) -> str:
        try:
            text = f"{self.status} {HTTPStatus(self.status).phrase}"
        except ValueError:
            text = str(self.status)
        kind = self.content_type.split(";")[0].strip()
        return f"{text} ({kind})" if kind else text


class ResponseRecorder:
    """An httpx2 response hook that keeps the last answer: `AsyncClient(event_hooks={"response":
    [recorder]})`. Exact for a connection of its own (discovery); on a client shared by
    concurrent calls it is the latest answer of any of them."""

    def __init__(self) -> None:
        self.last: Reached | None = None

    async def __call__(self, response: httpx2.Response) -> None:
        self.last = Reached(response.status_code, response.headers.get("content-type", ""))


def explain(exc: BaseException, url: str, transport: str, reached: Reached | None = None) -> tuple[str, str]:
    """(error type, message) for an exception raised while connecting to or talking to `url`."""
    inner = leaf(exc)
    if isinstance(inner, BackendFailure):
        return inner.kind, str(inner)
    if isinstance(inner, httpx2.HTTPStatusError):
        status = inner.response.status_code
        answer = Reached(status, inner.response.headers.get("content-type", ""))
        return PROTOCOL, f"{url} answered {answer}; {_what_to_try(url, transport, status)}"
    if isinstance(inner, httpx2.SSEError):  # an SSE GET answered, but not with an event stream
        match = _SSE_CONTENT_TYPE.search(str(inner))
        got = str(reached) if reached else (match["type"] if match else "something else")
        return PROTOCOL, f"{url} answered {got}, not an event stream; {_what_to_try(url, transport)}"
    if isinstance(inner, httpx2.TimeoutException):
        return UNAVAILABLE, f"no answer from {_host(url)} in time ({type(inner).__name__}); is the host up?"
    if isinstance(inner, httpx2.ConnectError | OSError):
        return UNAVAILABLE, _not_connected(inner, url)
    if isinstance(inner, MCPError):
        return _mcp_error(inner, url, transport, reached)
    text = str(inner) or type(inner).__name__
    return UNAVAILABLE, f"could not use {url}: {type(inner).__name__}: {text}"


def _mcp_error(exc: MCPError, url: str, transport: str, reached: Reached | None) -> tuple[str, str]:
    refused = auth_failure(exc)
    if refused is not None:
        return AUTH, refused
    key = (exc.code, exc.message)
    if key == _NOT_FOUND:
        return PROTOCOL, f"{url} answered {reached or '404 Not Found'}; {_what_to_try(url, transport, 404)}"
    if key == _ERROR_STATUS:
        status = reached.status if reached else None
        answer = str(reached) if reached else "an HTTP error status"
        return PROTOCOL, f"{url} answered {answer} to an MCP request; {_what_to_try(url, transport, status)}"
    content_type = _CONTENT_TYPE.match(exc.message)
    if exc.code == INVALID_REQUEST and content_type:
        kind = content_type["type"].split(";")[0].strip() or "no Content-Type"
        page = " (a web page)" if kind == "text/html" else ""
        return PROTOCOL, f"{url} answered with {kind}{page}, not MCP; {_what_to_try(url, transport)}"
    if exc.code == PARSE_ERROR and exc.message.startswith(_NOT_JSON_RPC):
        return PROTOCOL, f"{url} answered JSON that is not JSON-RPC, not MCP; {_what_to_try(url, transport)}"
    return PROTOCOL, f"{url}: MCP error {exc.code}: {exc.message}"


def _what_to_try(url: str, transport: str, status: int | None = None) -> str:
    if status in (401, 403):
        return "does the backend need credentials? send them in the gateway's headers or auth"
    if status is not None and status >= 500:
        return "the server failed on its side; see its logs"
    path = urlsplit(url).path.rstrip("/")
    if transport == "sse":
        if path.endswith("/mcp"):
            return "this path is where streamable HTTP is served: try transport streamable_http"
        if not path:
            return "is the path /sse?"
        return "is the path right (SSE servers usually serve /sse)? or try transport streamable_http"
    if path.endswith("/sse"):
        return "this path is where the older HTTP+SSE transport is served: try transport sse"
    if not path:
        return "is the path /mcp?"
    return "is the path right (MCP servers usually serve /mcp)? or try transport sse"


def _not_connected(exc: BaseException, url: str) -> str:
    host = _host(url)
    causes = _causes(exc)
    reason = next((str(c) for c in reversed(causes) if str(c)), type(exc).__name__)
    text = " ".join(str(c) for c in causes).lower()
    if any(isinstance(c, ssl.SSLError) for c in causes) or "certificate" in text:
        return f"TLS with {host} failed ({reason}); is it https, and is its certificate valid?"
    if any(isinstance(c, socket.gaierror) for c in causes) or "name or service not known" in text:
        return f"the host name in {url} does not resolve ({reason})"
    if any(isinstance(c, ConnectionRefusedError) for c in causes) or "refused" in text:
        return f"nothing accepts connections at {host} (connection refused); is the server running there?"
    return f"could not connect to {host}: {reason}"


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it, outermost first (httpx says "All connection attempts
    failed" over the errno that says why)."""
    chain = [exc]
    while (inner := chain[-1].__cause__ or chain[-1].__context__) is not None and inner not in chain:
        chain.append(inner)
    return chain


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url


def leaf(exc: BaseException) -> BaseException:
    """The error inside the ExceptionGroups that anyio task groups raise."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
