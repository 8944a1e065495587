"""MCP sessions (2025-era, `Mcp-Session-Id`) that any API replica can serve.

The SDK's `StreamableHTTPSessionManager` keeps a session in the process that created it, so
behind several replicas a client's next request fails with 404 on the others. This manager is
built from the same SDK parts (the streamable-HTTP transport, the JSON-RPC dispatcher, the
`ServerRunner` kernel, the modern-era entry) and adds what the SDK has no hook for:

- **The session's state lives in Redis** (`SessionStore`): the server it belongs to, the
  negotiated protocol version, the client's `initialize` params (info and capabilities),
  whether `notifications/initialized` arrived, and the level of its `logging/setLevel`, under
  `{prefix}:mcp:session:{id}` with the idle TTL (`MCPQ_MCP_ENDPOINT_SESSION_IDLE_S`). It is
  written before the `initialize` response leaves, so the client's next request may land anywhere.
- **A replica that gets a request for a session it does not hold adopts it**: it rebuilds an
  initialized server connection from that state (a `Connection` with the stored version and
  client params) on a transport with the same session id, and serves the request. Jobs, tasks
  and progress already live in Redis, so nothing else is per-replica.
- **One pub/sub channel** (`{prefix}:mcp:sessions`) carries, per session id, the end of a
  session (a `DELETE` on any replica removes the state and every replica holding the session
  closes it, its `GET` stream included), a new log level (every copy takes it), and the
  server-to-client messages meant for the standalone `GET` stream: a replica without the open
  stream publishes them, the one holding it writes them out (`RelayedOutbound`). Workers publish
  there too: a resource update for each subscribed session (shared/subscriptions.py), and for
  `listen:{id}` streams, which this manager hands to `listens`. It also carries a client's
  answer to a server-to-client request (elicitation, sampling) that the client POSTed to a
  replica other than the one awaiting it: each replica names the requests it sends after itself
  (`SessionDispatcher`), so the one that gets the answer knows whose it is and hands it over, and
  that one takes it as if it had been received there.
- Idle: each replica's copy idles out on its own (the transport's timer); a sweep, three times
  per idle period, refreshes the Redis TTL of the sessions used since the last sweep (or with a
  `GET` stream open here) and closes every local copy whose state is gone (ended elsewhere,
  expired, or an end message pub/sub lost).

A single replica works as before: the same transport and kernel, one Redis write per session.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
from mcp.server._streamable_http_modern import handle_modern_request  # the SDK manager's modern entry
from mcp.server.connection import Connection
from mcp.server.lowlevel import Server
from mcp.server.models import InitializationOptions
from mcp.server.runner import ServerRunner, aclose_shielded
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import RequestBodyLimitMiddleware
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.dispatcher import CallOptions, DispatchContext, Outbound
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.message import SessionMessage
from mcp.shared.transport_context import TransportContext
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    ErrorData,
    InitializeRequestParams,
    JSONRPCError,
    JSONRPCResponse,
    RequestId,
    jsonrpc_message_adapter,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from typing_extensions import override

from api.mcp.wire import SCOPE_KEY, SESSION_KEY, Caller
from shared.config import Settings
from shared.subscriptions import LISTEN_PREFIX, SubscriptionStore

log = logging.getLogger(__name__)

INITIALIZED = "notifications/initialized"
MAX_SESSIONS = 10_000  # per replica, as the SDK's manager: beyond it a new session answers 503


@dataclass(frozen=True)
class SessionState:
    """What a replica needs to serve a session it did not open."""

    server_id: str
    protocol_version: str
    client_params: dict[str, Any]  # the client's `initialize` params, wire form
    initialized: bool
    log_level: str | None = None  # what the client's `logging/setLevel` asked for, if it did


class SessionStore:
    """Session state in Redis (a hash with the idle TTL) and the sessions' pub/sub channel."""

    # Set a field only on a live session: an expired one must not come back as a bare hash.
    # KEYS[1] the session; ARGV ttl ms, field, value.
    _SET_IF_LIVE = """
    if redis.call('EXISTS', KEYS[1]) == 1 then
      redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
      redis.call('PEXPIRE', KEYS[1], ARGV[1])
      return 1
    end
    return 0
    """

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.ttl_ms = math.ceil(settings.mcp_endpoint_session_idle_s * 1000)
        self.channel = settings.key("mcp", "sessions")
        self._set_if_live = redis.register_script(self._SET_IF_LIVE)

    def _key(self, session_id: str) -> str:
        return self.settings.key("mcp", "session", session_id)

    async def save(self, session_id: str, state: SessionState) -> None:
        key = self._key(session_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "server": state.server_id,
                    "version": state.protocol_version,
                    "client": json.dumps(state.client_params, separators=(",", ":")),
                    "initialized": "1" if state.initialized else "0",
                },
            )
            pipe.pexpire(key, self.ttl_ms)
            await pipe.execute()

    async def load(self, session_id: str) -> SessionState | None:
        raw: dict[bytes, bytes] = await self.redis.hgetall(self._key(session_id))  # type: ignore[misc]
        if b"server" not in raw or b"version" not in raw or b"client" not in raw:
            return None
        return SessionState(
            server_id=raw[b"server"].decode(),
            protocol_version=raw[b"version"].decode(),
            client_params=json.loads(raw[b"client"]),
            initialized=raw.get(b"initialized") == b"1",
            log_level=raw[b"log_level"].decode() if b"log_level" in raw else None,
        )

    async def mark_initialized(self, session_id: str) -> None:
        await self._set_if_live(keys=[self._key(session_id)], args=[self.ttl_ms, "initialized", "1"])

    async def set_log_level(self, session_id: str, level: str) -> None:
        """Remember the session's log level, and tell every replica holding a copy of it."""
        await self._set_if_live(keys=[self._key(session_id)], args=[self.ttl_ms, "log_level", level])
        await self._publish({"session": session_id, "log_level": level})

    async def refresh(self, used: list[str], unused: list[str]) -> set[str]:
        """Refresh the idle TTL of the sessions used, check the others still exist; return the
        sessions (of either list) whose state is gone."""
        if not used and not unused:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for session_id in used:
                pipe.pexpire(self._key(session_id), self.ttl_ms)
            for session_id in unused:
                pipe.exists(self._key(session_id))
            alive = await pipe.execute()
        return {sid for sid, ok in zip(used + unused, alive, strict=True) if not ok}

    async def end(self, session_id: str) -> None:
        """Remove the state and tell every replica to close its copy of the session."""
        await self.redis.delete(self._key(session_id))
        await self._publish({"session": session_id, "end": True})

    async def relay(self, session_id: str, method: str, params: Mapping[str, Any] | None) -> None:
        """Hand a message for the session's standalone stream to the replica that holds it."""
        await self._publish({"session": session_id, "method": method, "params": dict(params or {})})

    async def hand_over(self, session_id: str, answer: JSONRPCResponse | JSONRPCError) -> None:
        """Hand the client's answer to a server-to-client request to the replica that sent it."""
        wire = answer.model_dump(by_alias=True, mode="json", exclude_unset=True)
        await self._publish({"session": session_id, "answer": wire})

    async def _publish(self, message: dict[str, Any]) -> None:
        await self.redis.publish(self.channel, json.dumps(message, separators=(",", ":")))


def _sender_of(request_id: RequestId | None) -> str | None:
    """The replica that sent a server-to-client request, from its id (`SessionDispatcher`)."""
    if isinstance(request_id, str) and request_id.startswith("r") and "-" in request_id:
        return request_id[1:].rpartition("-")[0]
    return None


class SessionDispatcher(JSONRPCDispatcher[TransportContext]):
    """The SDK dispatcher of a replica's copy of a session, for answers that land elsewhere.

    A 2025-era client POSTs its answer to a server-to-client request (elicitation, sampling) with
    only the session id, so a load balancer may take it to any replica; the request is awaited
    by the one that sent it. So each request this copy sends is named after its replica,
    `r{replica}-{n}` (a string no integer parse takes, so unique in the session across replicas,
    as the SDK's `CallOptions.request_id` asks), and an answer that arrives for another replica's
    request goes to `elsewhere` (which publishes it). `answered` takes one handed over from
    another replica as if it had been received here. An answer nobody awaits any more is dropped
    with the SDK's debug log.
    """

    def __init__(
        self,
        read_stream: ReadStream[SessionMessage | Exception],
        write_stream: WriteStream[SessionMessage],
        *,
        replica: str,
        ids: Iterator[int],
        elsewhere: Callable[[JSONRPCResponse | JSONRPCError], object],
    ) -> None:
        super().__init__(read_stream, write_stream, inline_methods=frozenset({"initialize"}))
        self.replica, self.ids, self.elsewhere = replica, ids, elsewhere

    @override
    async def send_raw_request(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        opts: CallOptions | None = None,
        *,
        _related_request_id: RequestId | None = None,
    ) -> dict[str, Any]:
        if opts is None or "request_id" not in opts:
            opts = {**(opts or {}), "request_id": f"r{self.replica}-{next(self.ids)}"}
        return await super().send_raw_request(method, params, opts, _related_request_id=_related_request_id)

    @override
    def _resolve_pending(self, request_id: RequestId | None, outcome: dict[str, Any] | ErrorData) -> None:
        # Where the read loop settles every response the client POSTed to this replica.
        sender = _sender_of(request_id)
        if sender is None or sender == self.replica:
            super()._resolve_pending(request_id, outcome)
        elif isinstance(outcome, ErrorData):
            self.elsewhere(JSONRPCError(jsonrpc="2.0", id=request_id, error=outcome))
        else:
            assert request_id is not None  # a sender comes from an id
            self.elsewhere(JSONRPCResponse(jsonrpc="2.0", id=request_id, result=outcome))

    def answered(self, answer: JSONRPCResponse | JSONRPCError) -> None:
        """An answer another replica received for a request of this one."""
        outcome = answer.result if isinstance(answer, JSONRPCResponse) else answer.error
        super()._resolve_pending(answer.id, outcome)


@dataclass(eq=False)
class LocalSession:
    """This replica's copy of a session: its transport, and its kernel's dispatcher once running."""

    id: str
    server_id: str
    transport: StreamableHTTPServerTransport
    store: SessionStore
    dispatcher: SessionDispatcher | None = None
    connection: Connection | None = None
    streams: int = 0  # GET streams open on this replica
    used: bool = True  # a request since the last sweep
    # The least severe backend log the client asked for (`logging/setLevel`); None: no logs.
    log_level: str | None = None

    async def set_log_level(self, level: str) -> None:
        self.log_level = level
        try:
            await self.store.set_log_level(self.id, level)
        except RedisError as exc:  # still holds here, as on a single replica
            log.warning("MCP session %s: log level not shared: %s", self.id, exc)


class RelayedOutbound:
    """The connection's standalone channel: written here when this replica holds the session's
    GET stream, else published for the replica that does. Server-to-client requests go out on
    this replica's stream (their answers come back here from any replica: `SessionDispatcher`)."""

    def __init__(self, local: LocalSession, dispatcher: SessionDispatcher, store: SessionStore):
        self.local, self.dispatcher, self.store = local, dispatcher, store

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        return await self.dispatcher.send_raw_request(method, params, opts)

    async def notify(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> None:
        if self.local.streams:
            await self.dispatcher.notify(method, params, opts)
        else:
            await self.store.relay(self.local.id, method, params)


def _error(message: str, status_code: int, code: int = INVALID_REQUEST) -> Response:
    """A JSON-RPC error body (no request id), as the SDK's manager answers."""
    body = JSONRPCError(jsonrpc="2.0", id=None, error=ErrorData(code=code, message=message))
    return Response(
        body.model_dump_json(by_alias=True, exclude_unset=True),
        status_code=status_code,
        media_type="application/json",
    )


class ReplicatedSessionManager:
    """Serves every request of /v1/servers/{id}/mcp once the endpoint has authenticated it."""

    def __init__(
        self,
        server: Server[Any],
        store: SessionStore,
        security: TransportSecuritySettings,
        idle_s: float,
        max_body_bytes: int,
        subscriptions: SubscriptionStore,
        listens: Callable[[str, str, dict[str, Any] | None], None],
        init_options: Callable[[str], Awaitable[InitializationOptions]] | None = None,
    ) -> None:
        self.server = server
        # A session's `initialize` result, by its server's id (its capabilities are its backends').
        self.init_options = init_options
        self.store = store
        # Resource subscriptions of the sessions (dropped when a session ends), and where
        # messages for `subscriptions/listen` streams go (api/mcp/subscriptions.py).
        self.subscriptions = subscriptions
        self.listens = listens
        self.security = security
        self.idle_s = idle_s
        # Refresh the shared TTL a few times per idle period, so an active session never lapses.
        self.sweep_s = max(idle_s / 3, 0.05)
        self.asgi_app = RequestBodyLimitMiddleware(self._handle, max_body_bytes)
        self.sessions: dict[str, LocalSession] = {}
        # Names this replica's server-to-client requests (SessionDispatcher).
        self.replica = uuid.uuid4().hex[:12]
        self._request_ids = itertools.count(1)
        self._adopting = anyio.Lock()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._lifespan_state: Any = None

    @property
    def channels(self) -> dict[str, Callable[[str], None]]:
        """For the process's one pub/sub reader (see shared.redis.start_subscriber)."""
        return {self.store.channel: self.on_message}

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        async with self.server.lifespan(self.server) as state, anyio.create_task_group() as tg:
            self._lifespan_state, self._task_group = state, tg
            tg.start_soon(self._sweep_forever)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
                self._task_group = None
                self.sessions.clear()

    async def handle_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.asgi_app(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        version = headers.get(MCP_PROTOCOL_VERSION_HEADER.lower())
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            # 2026-07-28 and later: no session; the SDK's single-exchange entry serves it.
            await handle_modern_request(
                self.server, self.security, False, self._lifespan_state, scope, receive, send
            )
            return
        caller = scope[SCOPE_KEY]
        assert isinstance(caller, Caller)  # the endpoint sets it before calling us
        server_id = str(caller.server.id)
        session_id = headers.get(MCP_SESSION_ID_HEADER.lower())
        if session_id is None:
            await self._open(server_id, scope, receive, send)
            return
        try:
            local = self.sessions.get(session_id) or await self._adopt(session_id, server_id)
        except RedisError as exc:
            log.warning("MCP session %s not loaded: %s", session_id[:64], exc)
            await _error("Session store unavailable; try again", 503, INTERNAL_ERROR)(scope, receive, send)
            return
        if local is None or local.server_id != server_id:
            await _error("Session not found", 404)(scope, receive, send)
            return
        await self._serve(local, scope, receive, send)

    async def _serve(self, local: LocalSession, scope: Scope, receive: Receive, send: Send) -> None:
        local.used = True
        scope[SESSION_KEY] = local  # the handlers' view of the session (api/mcp/wire.py)
        opens_stream = 1 if scope["method"] == "GET" else 0
        local.streams += opens_stream
        try:
            await local.transport.handle_request(scope, receive, send)
        finally:
            local.streams -= opens_stream
        if scope["method"] == "DELETE" and local.transport.is_terminated:
            await self.store.end(local.id)
            await self._forget(local)
            await self._unsubscribe(local.id)

    async def _open(self, server_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        """A request without a session id: only `initialize` establishes one, whose state is
        stored before its response leaves (the client's next request may go to another replica)."""
        if len(self.sessions) >= MAX_SESSIONS:
            await _error("Too many open sessions", 503, INTERNAL_ERROR)(scope, receive, send)
            return
        local = await self._start(uuid.uuid4().hex, server_id, None)
        refused = False
        established = False

        async def send_after_saving(message: Message) -> None:
            # An SSE response's headers leave before initialize runs, so the state is saved
            # before the first body that follows the handshake: the one carrying its result.
            nonlocal refused, established
            if message["type"] == "http.response.start":
                refused = message["status"] >= 400
            elif not (refused or established) and local.connection is not None:
                if local.connection.client_params is not None:
                    established = True
                    try:
                        await self.store.save(local.id, _state_of(server_id, local.connection))
                    except RedisError as exc:  # still served here, as by a single replica
                        log.warning("MCP session %s not shared: %s", local.id, exc)
            await send(message)

        try:
            await self._serve(local, scope, receive, send_after_saving)
        finally:
            if not established:
                await self._forget(local)

    async def _adopt(self, session_id: str, server_id: str) -> LocalSession | None:
        """Serve here a session another replica opened (or this one forgot when it idled); None
        if it is unknown, or another server's."""
        async with self._adopting:
            if (local := self.sessions.get(session_id)) is not None:
                return local
            state = await self.store.load(session_id)
            if state is None or state.server_id != server_id:
                return None
            return await self._start(session_id, state.server_id, state)

    async def _start(self, session_id: str, server_id: str, state: SessionState | None) -> LocalSession:
        """Register the session and start its kernel on a transport of its own; `state` rebuilds
        the connection of an established session, `None` opens a new one (awaiting initialize)."""
        assert self._task_group is not None, "run() first"
        transport = StreamableHTTPServerTransport(
            mcp_session_id=session_id,
            is_json_response_enabled=False,
            security_settings=self.security,
            idle_timeout=self.idle_s,
        )
        local = LocalSession(
            id=session_id,
            server_id=server_id,
            transport=transport,
            store=self.store,
            log_level=state.log_level if state is not None else None,
        )
        self.sessions[session_id] = local
        await self._task_group.start(self._run, local, state)
        return local

    async def _run(
        self, local: LocalSession, state: SessionState | None, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        tg = self._task_group
        assert tg is not None, "run() first"
        try:
            async with local.transport.connect() as (read_stream, write_stream):
                dispatcher = SessionDispatcher(
                    read_stream,
                    write_stream,
                    replica=self.replica,
                    ids=self._request_ids,
                    elsewhere=lambda answer: tg.start_soon(self._hand_over, local.id, answer),
                )
                outbound = RelayedOutbound(local, dispatcher, self.store)
                connection = _connection(outbound, local.id, state)
                local.dispatcher, local.connection = dispatcher, connection
                runner = ServerRunner(self.server, connection, self._lifespan_state)

                async def on_request(
                    dctx: DispatchContext[TransportContext], method: str, params: Mapping[str, Any] | None
                ) -> dict[str, Any]:
                    if method == "initialize" and self.init_options is not None:
                        runner.init_options = await self.init_options(local.server_id)
                    return await runner.on_request(dctx, method, params)

                async def on_notify(
                    dctx: DispatchContext[TransportContext], method: str, params: Mapping[str, Any] | None
                ) -> None:
                    await runner.on_notify(dctx, method, params)
                    if method == INITIALIZED and connection.initialized.is_set():
                        try:
                            await self.store.mark_initialized(local.id)
                        except RedisError as exc:  # informational: requests pass on client params
                            log.warning("MCP session %s: initialized not recorded: %s", local.id, exc)

                # The transport cancels its idle scope once nothing has been in flight for idle_s.
                idle = local.transport.idle_scope or anyio.CancelScope()
                with idle:
                    try:
                        await dispatcher.run(on_request, on_notify, task_status=task_status)
                    finally:
                        await aclose_shielded(connection)
        except Exception:
            log.exception("MCP session %s crashed", local.id)
        finally:
            await self._forget(local)

    async def _forget(self, local: LocalSession) -> None:
        """Drop this replica's copy (the shared state is untouched: others may still serve it)."""
        if self.sessions.get(local.id) is local:
            del self.sessions[local.id]
        if not local.transport.is_terminated:
            with anyio.CancelScope(shield=True):
                await local.transport.terminate()

    # --- what other replicas tell this one ---------------------------------------------------------

    def on_message(self, raw: str) -> None:
        """A session ended elsewhere, its log level changed, a client's answer to a request of
        this replica, or a message for a standalone stream (or a listen stream) that may be here."""
        message = json.loads(raw)
        target = str(message.get("session"))
        local = self.sessions.get(target)
        if target.startswith(LISTEN_PREFIX) and "method" in message:
            self.listens(target.removeprefix(LISTEN_PREFIX), str(message["method"]), message.get("params"))
            return
        if "answer" in message:
            self._take_answer(target, local, message["answer"])
            return
        if local is None or self._task_group is None:
            return
        if message.get("end"):
            self._task_group.start_soon(self._forget, local)
        elif "log_level" in message:
            local.log_level = str(message["log_level"])
        elif local.streams:
            self._task_group.start_soon(self._deliver, local, str(message["method"]), message.get("params"))

    def _take_answer(self, session_id: str, local: LocalSession | None, wire: Any) -> None:
        """Settle the request of this replica that another replica got the client's answer to."""
        if not isinstance(wire, dict) or _sender_of(wire.get("id")) != self.replica:
            return  # another replica's
        try:
            answer = jsonrpc_message_adapter.validate_python(wire, by_name=False)
        except ValidationError:
            answer = None
        if not isinstance(answer, JSONRPCResponse | JSONRPCError):
            log.warning("MCP session %s: a malformed answer was handed over", session_id)
            return
        if local is None or local.dispatcher is None:
            log.debug("MCP session %s: dropped the answer to %r (no longer held here)", session_id, answer.id)
            return
        local.dispatcher.answered(answer)

    async def _hand_over(self, session_id: str, answer: JSONRPCResponse | JSONRPCError) -> None:
        try:
            await self.store.hand_over(session_id, answer)
        except Exception as exc:  # runs in the manager's task group: never raises
            # The request awaiting it times out instead (MCPQ_INPUT_TIMEOUT_S for a question).
            log.warning("MCP session %s: the answer to %r not handed over: %s", session_id, answer.id, exc)

    async def _deliver(self, local: LocalSession, method: str, params: dict[str, Any] | None) -> None:
        # Best effort, as any notification: the stream may close meanwhile. Never raises (it runs
        # in the manager's task group, which an exception would bring down).
        try:
            if local.dispatcher is not None:
                await local.dispatcher.notify(method, params)
        except Exception:
            log.debug("dropped %s for session %s", method, local.id, exc_info=True)

    def notify(self, server_id: str, method: str) -> None:
        """Send a notification to every session of `server_id` whose GET stream is held here (each
        replica does so for the streams it holds)."""
        if self._task_group is None:
            return
        for local in list(self.sessions.values()):
            if local.server_id == server_id and local.streams:
                self._task_group.start_soon(self._deliver, local, method, None)

    async def _unsubscribe(self, session_id: str) -> None:
        """A session that ended has no more resource subscriptions (the last client of a backend
        subscription takes it down)."""
        try:
            await self.subscriptions.remove_all(session_id)
        except RedisError as exc:  # its subscriptions lapse at the next update instead
            log.warning("MCP session %s: subscriptions not removed: %s", session_id, exc)

    def reconnected(self) -> None:
        """Pub/sub may have missed an end: check every local session against Redis now."""
        if self._task_group is not None:
            self._task_group.start_soon(self._sweep)

    async def _sweep_forever(self) -> None:
        while True:
            await anyio.sleep(self.sweep_s)
            await self._sweep()

    async def _sweep(self) -> None:
        """Refresh the shared TTL of the sessions in use here (a request since the last sweep, or
        an open GET stream) and close every local copy whose state is gone."""
        sessions = list(self.sessions.values())
        used = [s for s in sessions if s.used or s.streams]
        unused = [s for s in sessions if not (s.used or s.streams)]
        for local in used:
            local.used = False
        try:
            gone = await self.store.refresh([s.id for s in used], [s.id for s in unused])
        except Exception:  # Redis away: the next sweep (or the reconnect) tries again
            log.warning("MCP session sweep failed", exc_info=True)
            for local in used:
                local.used = True
            return
        for local in sessions:
            if local.id in gone:
                await self._forget(local)
                await self._unsubscribe(local.id)


def _connection(outbound: Outbound, session_id: str, state: SessionState | None) -> Connection:
    if state is None:
        return Connection.for_loop(outbound, session_id=session_id)
    connection = Connection(
        outbound,
        protocol_version=state.protocol_version,
        session_id=session_id,
        client_params=InitializeRequestParams.model_validate(state.client_params, by_name=False),
    )
    if state.initialized:
        connection.initialized.set()
    return connection


def _state_of(server_id: str, connection: Connection) -> SessionState:
    params = connection.client_params
    assert params is not None
    return SessionState(
        server_id=server_id,
        protocol_version=connection.protocol_version,
        client_params=params.model_dump(by_alias=True, mode="json", exclude_none=True),
        initialized=connection.initialized.is_set(),
    )
