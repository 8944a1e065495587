"""The ASGI endpoint at /v1/servers/{id}/mcp: DNS-rebinding check, auth, then the session
manager (one per process, shared by every virtual server; each request carries its server and
caller on the ASGI scope; sessions are shared by every replica, see api/mcp/sessions.py).

Order matters: the Host/Origin check runs first (no DB read for a rebinding attempt), then the
server is looked up and the bearer token checked, each in a short session closed at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from api.errors import error_response
from api.mcp.handlers import FrontDoor
from api.mcp.sessions import ReplicatedSessionManager, SessionStore
from api.mcp.subscriptions import LIST_CHANGED
from api.mcp.wire import SCOPE_KEY, Caller
from shared.auth import service as auth_service
from shared.auth.schemas import Principal, Role
from shared.context import AppContext, changed_lists
from shared.errors import MCPQError, NotFound, Unauthorized
from shared.servers import service as server_service

MCP_METHODS = ["GET", "POST", "DELETE"]
# The statuses the SDK's transport check refuses with, as (our status, kind, what to change). A
# POST that is not JSON is 415, as on the REST routes (the SDK says 400).
_REFUSALS = {
    400: (415, "unsupported_media_type", "send MCP messages as JSON with Content-Type: application/json"),
    421: (
        421,
        "misdirected_request",
        "this Host is not allowed for MCP (DNS-rebinding protection); "
        "add the host the API is reached by to MCPQ_MCP_ALLOWED_HOSTS",
    ),
    403: (
        403,
        "forbidden",
        "this Origin is not allowed for MCP (DNS-rebinding protection); add it to MCPQ_MCP_ALLOWED_ORIGINS",
    ),
}


class MCPEndpoint:
    def __init__(self, ctx: AppContext) -> None:
        settings = ctx.settings
        self.ctx = ctx
        self.front = FrontDoor(ctx)
        self.security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=settings.mcp_hosts,
            allowed_origins=settings.mcp_origins,
        )
        self.manager = ReplicatedSessionManager(
            self.front.server,
            SessionStore(ctx.queue.redis, settings),
            self.security,
            idle_s=settings.mcp_endpoint_session_idle_s,
            max_body_bytes=settings.max_body_bytes,
            subscriptions=self.front.pushes.store,
            listens=self.front.pushes.deliver,
            init_options=self.front.init_options,
        )

    @property
    def channels(self) -> dict[str, Callable[[str], None]]:
        """What this endpoint hears on the process's pub/sub reader: other replicas' sessions."""
        return self.manager.channels

    def reconnected(self) -> None:
        self.manager.reconnected()

    def catalog_changed(self, message: str) -> None:
        """Lists of virtual servers changed (shared.context.AppContext.catalog_changed): tell the
        clients this process holds a stream of."""
        for server_id, kinds in changed_lists(message).items():
            for kind in kinds:
                if kind in LIST_CHANGED:
                    self.manager.notify(server_id, LIST_CHANGED[kind])
            self.front.pushes.lists_changed(server_id, kinds)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """Run the session manager in a task of its own: its anyio task group must be entered and
        left by one task, which the lifespan's caller need not be."""
        ready, stop = asyncio.Event(), asyncio.Event()

        async def own() -> None:
            async with self.manager.run():
                ready.set()
                await stop.wait()

        owner = asyncio.create_task(own(), name="mcp-session-manager")
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait({owner, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if owner.done():
            waiting.cancel()
            owner.result()  # it failed to start: raise why
        try:
            yield
        finally:
            stop.set()
            await owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        refused = await TransportSecurityMiddleware(self.security).validate_request(
            request, is_post=request.method == "POST"
        )
        if refused is not None:
            # The SDK says why in plain text; answer in the API's JSON error shape instead.
            status, kind, detail = _REFUSALS.get(
                refused.status_code, (refused.status_code, "bad_request", bytes(refused.body).decode())
            )
            await error_response(status, kind, detail)(scope, receive, send)
            return
        try:
            caller = await self._caller(request, str(scope.get("path_params", {}).get("server_id", "")))
        except MCPQError as exc:
            await error_response(exc.status_code, exc.kind, exc.detail)(scope, receive, send)
            return
        scope[SCOPE_KEY] = caller
        await self.manager.handle_request(scope, receive, send)

    async def _caller(self, request: Request, server_id: str) -> Caller:
        """The same bearer tokens as REST. Another team's server answers 404, like an unknown one,
        unless it is `public_mcp`: then anyone (with or without a token) may use it, acting as a
        member of the server's team."""
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        bearer = secret if scheme.lower() == "bearer" and secret else None
        principal = await auth_service.authenticate(self.ctx, bearer) if bearer else None
        server = await server_service.lookup(self.ctx, server_id)
        if server is None:
            raise NotFound(f"server {server_id} not found")
        if principal is not None:
            try:
                principal.authorize(server.team_id, Role.VIEWER, f"server {server_id}")
            except NotFound:
                if not server.public_mcp:
                    raise
            else:
                return Caller(server=server, principal=principal, anonymous=False)
        elif not server.public_mcp:
            raise Unauthorized("missing bearer token")
        return Caller(
            server=server, principal=Principal(role=Role.MEMBER, team_id=server.team_id), anonymous=True
        )


class _Route:
    """The route's endpoint: hands the request to the process's MCPEndpoint (built in the lifespan).
    A class instance, not a function, so Starlette calls it as a raw ASGI app."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint: MCPEndpoint = scope["app"].state.mcp
        await endpoint(scope, receive, send)


route = _Route()
