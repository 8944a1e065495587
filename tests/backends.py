"""Real MCP backends for tests, served by uvicorn on loopback in a thread of their own.

- `stateful`:  the SDK's MCPServer over streamable HTTP with sessions (SSE response bodies)
- `stateless`: the same tools, stateless streamable HTTP with JSON response bodies
- `sse`:       the same tools over the legacy HTTP+SSE transport
- `handshake`: the stateful SDK server behind a filter that refuses `server/discover`, as a
               server of the 2025-11-25 era does: clients fall back to `initialize`
- `legacy`:    a minimal hand-written server that only speaks protocol 2025-06-18 (initialize,
               Mcp-Session-Id, JSON bodies) and can expire its sessions on demand
- `nolisten`:  the stateful server without `subscriptions/listen` (2026-07-28 clients cannot
               subscribe on it; 2025 sessions can)
- `oauth`, `oauth_sse`: the stateful server (and the SSE one) behind a bearer check, with the
               OAuth token endpoint that issues its tokens at `/token` (`OAuthServer`)
- `growing`, `growing_handshake`: a server whose tool `grow` adds a tool and says so
               (`notifications/tools/list_changed`, or a `subscriptions/listen` event at
               2026-07-28); the second refuses `server/discover`, so clients use 2025-11-25

Every backend of `build_server` has a subscribable resource, `test://watched-resource`: `resources/subscribe`
and `resources/unsubscribe` (2025 sessions) and `subscriptions/listen` (2026-07-28) are
recorded in `Watched`; the `touch` tool announces an update to every subscriber.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import mcp_types as types
import uvicorn
from mcp.server import MCPServer
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.session import ServerSession
from mcp.types import (
    LoggingLevel,
    LoggingMessageNotification,
    LoggingMessageNotificationParams,
    ToolAnnotations,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# Binary resource contents: every byte value, so a base64 round trip is checked in full.
LOGO_BYTES = bytes(range(256))


@dataclass
class Gate:
    """Lets a test hold a tool mid-call and release it. Lives in the backend thread's loop."""

    loop: asyncio.AbstractEventLoop
    entered: threading.Event = field(default_factory=threading.Event)
    release_event: asyncio.Event | None = None
    calls: int = 0

    def release(self) -> None:
        event = self.release_event
        if event is not None:
            self.loop.call_soon_threadsafe(event.set)

    def reset(self) -> None:
        self.entered.clear()
        self.release_event = None


@dataclass
class Watched:
    """Who subscribed to what on the MCPServer backends (2025 sessions), and what was asked."""

    sessions: dict[str, set[ServerSession]] = field(default_factory=dict)
    subscribed: list[str] = field(default_factory=list)
    unsubscribed: list[str] = field(default_factory=list)
    touched: list[str] = field(default_factory=list)

    async def subscribe(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscribeRequestParams
    ) -> Any:
        self.subscribed.append(params.uri)
        self.sessions.setdefault(params.uri, set()).add(ctx.session)
        return {}

    async def unsubscribe(
        self, ctx: ServerRequestContext[Any, Any], params: types.UnsubscribeRequestParams
    ) -> Any:
        self.unsubscribed.append(params.uri)
        self.sessions.get(params.uri, set()).discard(ctx.session)
        return {}


def build_server(
    gates: dict[str, Gate], counters: dict[str, int], watched: Watched | None = None, *, listen: bool = True
) -> MCPServer:
    server = MCPServer("mcpq-test-backend", version="1.2.3", subscriptions=None if listen else False)
    _add_subscriptions(server, watched or Watched())

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    async def delayed_echo(text: str, seconds: float) -> str:
        """Return the text after a pause."""
        await asyncio.sleep(seconds)
        return text

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool(annotations=ToolAnnotations(idempotentHint=True))
    async def sleep(seconds: float, ctx: Context) -> str:
        """Sleep, reporting progress every 0.1 s."""
        steps = max(1, int(seconds / 0.1))
        for i in range(steps):
            await ctx.report_progress(i, steps, f"step {i}")
            await asyncio.sleep(seconds / steps)
        return f"slept {seconds}"

    @server.tool()
    async def hold(key: str) -> str:
        """Block until the test releases `key`."""
        gate = gates[key]
        gate.calls += 1
        gate.release_event = asyncio.Event()
        gate.entered.set()
        await gate.release_event.wait()
        return f"released {key}"

    @server.tool()
    def count(key: str) -> int:
        """Count calls per key (to see whether a call ran twice)."""
        counters[key] = counters.get(key, 0) + 1
        return counters[key]

    @server.tool()
    def fail(message: str) -> str:
        """Raise inside the tool: MCP answers with isError."""
        raise ValueError(message)

    @server.tool()
    def test_error_handling() -> str:
        """Always fails (the conformance suite's tools-call-error scenario calls it)."""
        raise ToolError("This tool intentionally returns an error for testing")

    @server.tool()
    def trace_context(ctx: Context) -> dict[str, str | None]:
        """The W3C trace context this call arrived with: its HTTP `traceparent` header and the
        `traceparent` in its `_meta` (the tracing test compares them with the caller's spans)."""
        request = ctx.request_context.request
        headers = getattr(request, "headers", None)
        meta = dict(ctx.request_context.meta or {})
        return {
            "header": headers.get("traceparent") if headers is not None else None,
            "meta": meta.get("traceparent"),
        }

    _add_relayed_notifications(server)
    _add_resources_and_prompts(server)
    return server


async def _log(ctx: Context, level: LoggingLevel, data: Any, *, call_scoped: bool = True) -> None:
    """A log entry on the call's own stream, or (not `call_scoped`) on the session's standalone
    stream. `send_notification`, not the deprecated `ctx.log`, whose warning tests make an error."""
    entry = LoggingMessageNotification(params=LoggingMessageNotificationParams(level=level, data=data))
    related = ctx.request_id if call_scoped else None
    await ctx.request_context.session.send_notification(entry, related_request_id=related)


def _add_relayed_notifications(server: MCPServer) -> None:
    @server.tool()
    async def burst(count: int, ctx: Context) -> str:
        """Report `count` progress updates as fast as it can, then return at once; say which
        progress token the call came with."""
        for i in range(1, count + 1):
            await ctx.report_progress(i, count, f"{i}/{count}")
        meta = dict(ctx.request_context.meta or {})
        return f"token={meta.get('progress_token')}"

    @server.tool()
    async def levels(ctx: Context) -> str:
        """Log once at each level, a progress update between each two, then once outside the call;
        say which level the request opted in to (2026-07-28 `_meta`)."""
        for i, level in enumerate(("debug", "info", "notice", "warning", "error", "critical")):
            await _log(ctx, level, f"{level} entry")
            await ctx.report_progress(i + 1, 6)
        # Once the session's standalone stream is surely open, and well before the call ends.
        await asyncio.sleep(0.2)
        await _log(ctx, "error", "session-level entry", call_scoped=False)
        await asyncio.sleep(0.1)
        meta = dict(ctx.request_context.meta or {})
        return f"logged; asked for {meta.get('io.modelcontextprotocol/logLevel')}"

    @server.tool()
    async def chatty(tag: str, ctx: Context) -> str:
        """Interleave progress and logs named by `tag`, slowly enough to overlap another call;
        say which backend session served it."""
        for i in range(5):
            await ctx.report_progress(i, 5, f"{tag} {i}")
            await _log(ctx, "info", f"{tag} {i}")
            await asyncio.sleep(0.02)
        headers = ctx.headers or {}
        return f"{tag} {headers.get('mcp-session-id')}"


def _add_subscriptions(server: MCPServer, watched: Watched) -> None:
    low = server._lowlevel_server  # the SDK's MCPServer has no subscribe hook of its own
    low.add_request_handler("resources/subscribe", types.SubscribeRequestParams, watched.subscribe)
    low.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, watched.unsubscribe)

    @server.tool()
    async def touch(uri: str, ctx: Context) -> int:
        """Announce that `uri` changed: to 2025 subscribers and to 2026-07-28 listen streams."""
        watched.touched.append(uri)
        sessions = list(watched.sessions.get(uri, ()))
        for session in sessions:
            await session.send_resource_updated(uri)
        await ctx.notify_resource_updated(uri)
        return len(sessions)


def _add_resources_and_prompts(server: MCPServer) -> None:
    @server.resource("demo://readme")
    def readme() -> str:
        return "hello from a resource"

    @server.resource("test://watched-resource")
    def watched() -> str:
        return "a resource clients subscribe to"

    @server.resource("demo://logo.png", mime_type="image/png")
    def logo() -> bytes:
        return LOGO_BYTES

    @server.resource("demo://items/{item}")
    def item(item: str) -> str:
        return f"item {item}"

    @server.prompt()
    def greet(name: str) -> str:
        """Greet someone."""
        return f"Hello {name}"


def build_growing_server() -> MCPServer:
    server = MCPServer("mcpq-growing-backend", version="0.1")

    @server.tool()
    async def grow(name: str, ctx: Context) -> str:
        """Add a tool named `name` (it echoes) and tell the clients the tool list changed."""

        def grown(text: str) -> str:
            return text

        server.add_tool(grown, name=name, description="added at run time")
        await ctx.notify_tools_changed()  # subscriptions/listen streams (2026-07-28)
        if ctx.protocol_version.startswith("2025-"):
            await ctx.session.send_tool_list_changed()
        return name

    return server


class OAuthServer:
    """An OAuth token endpoint (`/token`, client credentials grant, client authenticated with HTTP
    Basic) in front of MCP apps (streamable HTTP at /mcp, SSE at /sse and /messages/) that answer
    401 unless the bearer is a live token it issued."""

    def __init__(self, mcp_app: Any, sse_app: Any) -> None:
        self.mcp_app = mcp_app
        self.sse_app = sse_app
        self.client_id = "mcpq-test-client"
        self.client_secret = f"oauth-secret-{uuid.uuid4().hex}"
        self.expires_in: float = 3600
        self.tokens: dict[str, float] = {}  # token -> when it expires (time.time)
        self.issued: list[str] = []
        self.forms: list[dict[str, str]] = []  # what each token request asked for
        self.refused = 0  # requests to the MCP app refused with 401
        self.refused_bearers: list[str] = []
        self.scope_of: dict[str, str] = {}  # the scope each token was issued for
        self.refuse_all = False  # refuse every token (one issued for another audience, say)
        self.bearers: set[str] = set()  # every bearer the MCP app was sent

    def reset(self, expires_in: float = 3600) -> None:
        self.expires_in = expires_in
        self.tokens.clear()
        self.issued.clear()
        self.forms.clear()
        self.refused = 0
        self.refused_bearers.clear()
        self.refuse_all = False

    def revoke_all(self) -> None:
        self.tokens.clear()

    # Sessions of earlier tests' gateways may still be pooled on the worker and fetch or be
    # refused tokens of their own meanwhile: a test counts those of its gateway's scope.
    def issued_for(self, scope: str) -> list[str]:
        return [token for token in self.issued if self.scope_of.get(token) == scope]

    def refused_for(self, scope: str) -> int:
        return sum(self.scope_of.get(bearer) == scope for bearer in self.refused_bearers)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.mcp_app(scope, receive, send)
            return
        request = Request(scope, receive)
        if scope["path"] == "/token":
            response = await self._token(request)
            await response(scope, receive, send)
            return
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        self.bearers.add(bearer)
        if self.refuse_all or self.tokens.get(bearer, 0) < time.time():
            self.refused += 1
            self.refused_bearers.append(bearer)
            await JSONResponse({"error": "invalid_token"}, status_code=401)(scope, receive, send)
            return
        sse = scope["path"].startswith(("/sse", "/messages"))
        await (self.sse_app if sse else self.mcp_app)(scope, receive, send)

    async def _token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        self.forms.append(form)
        basic = request.headers.get("authorization", "").removeprefix("Basic ")
        client_id, _, secret = base64.b64decode(basic or "").decode().partition(":")
        if (unquote(client_id), unquote(secret)) != (self.client_id, self.client_secret):
            return JSONResponse(
                {"error": "invalid_client", "error_description": "unknown client or wrong secret"},
                status_code=401,
            )
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        token = secrets.token_urlsafe(24)
        self.tokens[token] = time.time() + self.expires_in
        self.issued.append(token)
        self.scope_of[token] = form.get("scope", "")
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})


class LegacyServer:
    """Protocol 2025-06-18 only: `server/discover` is unknown, sessions come from `initialize`."""

    VERSION = "2025-06-18"

    def __init__(self) -> None:
        self.sessions: set[str] = set()
        self.initializations = 0
        # The headers of the last request, to see what credentials a worker sent.
        self.last_headers: dict[str, str] = {}
        self.app = Starlette(routes=[Route("/mcp", self.handle, methods=["POST", "GET", "DELETE"])])

    def expire_sessions(self) -> None:
        self.sessions.clear()

    async def handle(self, request: Request) -> Response:
        self.last_headers = dict(request.headers)
        session_id = request.headers.get("mcp-session-id")
        if request.method == "DELETE":
            self.sessions.discard(session_id or "")
            return Response(status_code=200)
        if request.method == "GET":
            return Response(status_code=405)
        message = json.loads(await request.body())
        method, msg_id = message.get("method"), message.get("id")
        if method == "initialize":
            self.initializations += 1
            new_id = uuid.uuid4().hex
            self.sessions.add(new_id)
            result = {
                "protocolVersion": self.VERSION,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "legacy-backend", "version": "0.9"},
            }
            return JSONResponse(
                {"jsonrpc": "2.0", "id": msg_id, "result": result}, headers={"mcp-session-id": new_id}
            )
        if method == "server/discover" or session_id is None:
            return JSONResponse(
                {"jsonrpc": "2.0", "id": msg_id, "error": {"code": -32601, "message": "Method not found"}}
            )
        if session_id not in self.sessions:
            return JSONResponse(
                {"jsonrpc": "2.0", "id": msg_id, "error": {"code": -32001, "message": "Session not found"}},
                status_code=404,
            )
        if msg_id is None:  # a notification
            return Response(status_code=202)
        return JSONResponse({"jsonrpc": "2.0", "id": msg_id, "result": self._answer(method, message)})

    def _answer(self, method: str, message: dict[str, Any]) -> dict[str, Any]:
        if method == "tools/list":
            return {
                "tools": [
                    {
                        "name": "echo",
                        "description": "Echo (legacy)",
                        "inputSchema": {
                            "type": "object",
                            "properties": {"text": {"type": "string"}},
                            "required": ["text"],
                        },
                    }
                ]
            }
        if method == "tools/call":
            text = message["params"]["arguments"]["text"]
            return {"content": [{"type": "text", "text": f"legacy:{text}"}], "isError": False}
        return {}


class RefuseDiscover:
    """ASGI wrapper: answer `server/discover` with "method not found", pass the rest through."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if b'"server/discover"' in body:
            msg_id = json.loads(body).get("id")
            response = JSONResponse(
                {"jsonrpc": "2.0", "id": msg_id, "error": {"code": -32601, "message": "Method not found"}}
            )
            await response(scope, receive, send)
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serving(app: Any, *, lifespan: str = "auto") -> AsyncIterator[str]:
    """`app` served by uvicorn on a free loopback port, on the running loop, for clients that need a
    real socket; yields its base URL and stops the server on leaving."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan=lifespan, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for this
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


class ServerThread:
    """ASGI apps served by uvicorn on loopback ports, on an event loop of their own in a daemon
    thread, so that no test's loop (blocked or closed) ever stalls them."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._servers: list[uvicorn.Server] = []
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def serve(self, app: Any, path: str) -> str:
        """Serve `app` on a free port; its URL, ending in `path`."""
        port = free_port()
        asyncio.run_coroutine_threadsafe(self._serve(app, port), self.loop).result(15)
        return f"http://127.0.0.1:{port}{path}"

    async def _serve(self, app: Any, port: int) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        self._servers.append(server)
        asyncio.get_running_loop().create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for this
            await asyncio.sleep(0.01)

    def stop(self) -> None:
        async def shutdown() -> None:
            for server in self._servers:
                server.should_exit = True
            await asyncio.sleep(0.3)
            # Streams still open (SSE watchers) would be destroyed pending: end them first.
            leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class Backends(ServerThread):
    """Starts every backend in one background thread; `url(kind)` gives its endpoint."""

    def __init__(self) -> None:
        super().__init__("mcp-backends")
        self.gates: dict[str, Gate] = {}
        self.counters: dict[str, int] = {}
        self.watched = Watched()
        self.legacy = LegacyServer()
        self.oauth: OAuthServer | None = None
        self.urls: dict[str, str] = {}

    def gate(self, key: str) -> Gate:
        gate = self.gates.get(key)
        if gate is None:
            gate = self.gates[key] = Gate(self.loop)
        return gate

    def start(self) -> None:
        super().start()
        server = self.server = build_server(self.gates, self.counters, self.watched)
        growing = build_growing_server()
        self.oauth = OAuthServer(server.streamable_http_app(), server.sse_app())
        apps: dict[str, tuple[Callable[[], Any], str]] = {
            "stateful": (lambda: server.streamable_http_app(), "/mcp"),
            "stateless": (
                lambda: server.streamable_http_app(stateless_http=True, json_response=True),
                "/mcp",
            ),
            "sse": (lambda: server.sse_app(), "/sse"),
            "handshake": (lambda: RefuseDiscover(server.streamable_http_app()), "/mcp"),
            "legacy": (lambda: self.legacy.app, "/mcp"),
            # 2026-07-28 without `subscriptions/listen`: subscriptions need a handshake session.
            "nolisten": (
                lambda: build_server(
                    self.gates, self.counters, self.watched, listen=False
                ).streamable_http_app(),
                "/mcp",
            ),
            "oauth": (lambda: self.oauth, "/mcp"),
            "growing": (lambda: growing.streamable_http_app(), "/mcp"),
            "growing_handshake": (lambda: RefuseDiscover(growing.streamable_http_app()), "/mcp"),
        }
        for kind, (make_app, path) in apps.items():
            self.urls[kind] = self.serve(make_app(), path)
        self.urls["oauth_sse"] = self.urls["oauth"].removesuffix("/mcp") + "/sse"

    def stop(self) -> None:
        for gate in self.gates.values():
            gate.release()
        super().stop()
