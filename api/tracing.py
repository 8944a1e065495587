"""A server span around each HTTP request, continuing the client's `traceparent` header, and one
around each MCP call, continuing the `traceparent` in the request's `_meta` (SEP-414).

A plain ASGI middleware rather than opentelemetry-instrumentation-asgi: with tracing off it costs
one check per request, and the span it makes is the one thing the trace needs from it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from mcp.server.context import ServerRequestContext
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import tracing


class TraceRequests:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing.enabled():
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []}
        method = scope["method"]
        attributes = {"http.request.method": method, "url.path": scope["path"]}
        with tracing.span(
            f"{method} {scope['path']}", kind=SpanKind.SERVER, parent=headers, attributes=attributes
        ) as span:

            async def send_traced(message: Message) -> None:
                if span is not None and message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            await self.app(scope, receive, send_traced)


def mcp_call_span(ctx: ServerRequestContext[Any, Any], name: str) -> AbstractContextManager[Span | None]:
    """The span of one MCP front-door call. Its parent is the client's `_meta.traceparent` if it
    sent one, else the HTTP request's span."""
    return tracing.span(
        f"{ctx.method} {name}",
        kind=SpanKind.SERVER,
        parent=ctx.meta,
        attributes={"mcp.method.name": ctx.method, "mcpq.item": name},
    )
