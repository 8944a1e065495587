"""shared/backend_errors.explain on the exceptions the mcp SDK really raises, against real loopback
servers: a web page, a JSON API, an MCP server at the wrong path or spoken to with the wrong
transport, a server that wants credentials, and a closed port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from shared.backend_errors import PROTOCOL, UNAVAILABLE, Reached, ResponseRecorder, explain
from tests.backends import Backends, free_port, serving


async def _page(_: Request) -> Response:
    return HTMLResponse("<html><body>Welcome</body></html>")


async def _json_api(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _wants_credentials(_: Request) -> Response:
    return JSONResponse({"detail": "log in first"}, status_code=401)


@pytest.fixture(scope="module")
async def not_mcp() -> AsyncIterator[str]:
    """A plain web server: an HTML page at /, a JSON API at /api, 401 at /private."""
    app = Starlette(
        routes=[
            Route("/", _page, methods=["GET", "POST"]),
            Route("/api", _json_api, methods=["GET", "POST"]),
            Route("/private", _wants_credentials, methods=["GET", "POST"]),
        ]
    )
    async with serving(app) as url:
        yield url


async def connect_error(url: str, transport: str, recorder: ResponseRecorder | None = None) -> BaseException:
    """Open a session the way a worker does and return what the SDK raised."""
    try:
        async with asyncio.timeout(20):
            if transport == "sse":
                async with Client(sse_client(url, timeout=5), cache=None):
                    pass
            else:
                hooks = {"response": [recorder]} if recorder else {}
                async with (
                    httpx2.AsyncClient(timeout=5, event_hooks=hooks) as http,
                    Client(streamable_http_client(url, http_client=http), cache=None),
                ):
                    pass
    except Exception as exc:
        return exc
    raise AssertionError(f"{url} ({transport}) connected")


def root_of(backend_url: str) -> str:
    """http://127.0.0.1:P/mcp -> http://127.0.0.1:P/"""
    return backend_url.rsplit("/", 1)[0] + "/"


async def test_a_web_page_is_not_mcp(not_mcp: str) -> None:
    url = f"{not_mcp}/"
    kind, message = explain(await connect_error(url, "streamable_http"), url, "streamable_http")
    assert (kind, message) == (
        PROTOCOL,
        f"{url} answered with text/html (a web page), not MCP; is the path /mcp?",
    )


async def test_a_web_page_over_sse(not_mcp: str) -> None:
    url = f"{not_mcp}/"
    kind, message = explain(await connect_error(url, "sse"), url, "sse")
    assert (kind, message) == (PROTOCOL, f"{url} answered text/html, not an event stream; is the path /sse?")


async def test_a_json_api_is_not_mcp(not_mcp: str) -> None:
    url = f"{not_mcp}/api"
    kind, message = explain(await connect_error(url, "streamable_http"), url, "streamable_http")
    assert kind == PROTOCOL
    assert message == (
        f"{url} answered JSON that is not JSON-RPC, not MCP; "
        "is the path right (MCP servers usually serve /mcp)? or try transport sse"
    )


async def test_wrong_path_on_an_mcp_server(backends: Backends) -> None:
    """The MCP server serves /mcp; the gateway was registered with /."""
    url = root_of(backends.urls["stateful"])
    kind, message = explain(await connect_error(url, "streamable_http"), url, "streamable_http")
    assert (kind, message) == (PROTOCOL, f"{url} answered 404 Not Found; is the path /mcp?")


async def test_wrong_path_over_sse_names_the_status_not_a_link(backends: Backends) -> None:
    """httpx's own text ends in a link to MDN; the explanation says the status and the fix."""
    url = root_of(backends.urls["sse"])
    exc = await connect_error(url, "sse")
    assert "developer.mozilla.org" in str(exc)  # what the SDK says by itself
    kind, message = explain(exc, url, "sse")
    assert (kind, message) == (PROTOCOL, f"{url} answered 404 Not Found (text/plain); is the path /sse?")


async def test_sse_server_spoken_to_with_streamable_http(backends: Backends) -> None:
    url = backends.urls["sse"]
    exc = await connect_error(url, "streamable_http")
    kind, message = explain(exc, url, "streamable_http")
    assert kind == PROTOCOL
    assert message == (
        f"{url} answered an HTTP error status to an MCP request; "
        "this path is where the older HTTP+SSE transport is served: try transport sse"
    )


async def test_recorded_answer_names_the_status(backends: Backends) -> None:
    """With the worker's response hook, the same failure says which status came back."""
    url = backends.urls["sse"]
    recorder = ResponseRecorder()
    exc = await connect_error(url, "streamable_http", recorder)
    assert recorder.last is not None
    kind, message = explain(exc, url, "streamable_http", recorder.last)
    assert kind == PROTOCOL
    assert message.startswith(f"{url} answered 405 Method Not Allowed")
    assert message.endswith("try transport sse")


async def test_streamable_http_server_spoken_to_with_sse(backends: Backends) -> None:
    url = backends.urls["stateful"]
    kind, message = explain(await connect_error(url, "sse"), url, "sse")
    assert kind == PROTOCOL
    assert message.startswith(f"{url} answered 400 Bad Request")
    assert message.endswith("this path is where streamable HTTP is served: try transport streamable_http")


async def test_a_backend_that_wants_credentials(not_mcp: str) -> None:
    url = f"{not_mcp}/private"
    recorder = ResponseRecorder()
    exc = await connect_error(url, "streamable_http", recorder)
    kind, message = explain(exc, url, "streamable_http", recorder.last)
    assert (kind, message) == (
        PROTOCOL,
        f"{url} answered 401 Unauthorized (application/json) to an MCP request; "
        "does the backend need credentials? send them in the gateway's headers or auth",
    )
    over_sse = explain(await connect_error(url, "sse"), url, "sse")
    assert over_sse[1].endswith("send them in the gateway's headers or auth")


@pytest.mark.parametrize("transport", ["streamable_http", "sse"])
async def test_nothing_listening(transport: str) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    kind, message = explain(await connect_error(url, transport), url, transport)
    host = url.split("/")[2]
    assert (kind, message) == (
        UNAVAILABLE,
        f"nothing accepts connections at {host} (connection refused); is the server running there?",
    )


def test_reached_reads_like_a_status_line() -> None:
    assert str(Reached(405, "text/plain; charset=utf-8")) == "405 Method Not Allowed (text/plain)"
    assert str(Reached(299)) == "299"


async def test_a_working_backend_raises_nothing(backends: Backends) -> None:
    """The harness itself: against the right URL and transport there is nothing to explain."""
    for kind in ("stateful", "sse"):
        transport = "sse" if kind == "sse" else "streamable_http"
        with pytest.raises(AssertionError, match="connected"):
            await connect_error(backends.urls[kind], transport)
