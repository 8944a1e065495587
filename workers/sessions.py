"""A pool of live MCP client sessions, one per backend, shared by every job on this worker.

A new session costs a handshake (~50 ms) plus a tool listing; a reused one costs a request.
Each session lives in an owner task, because the SDK's transports use anyio task groups that
must be entered and exited by the same task. Jobs borrow the session's `Client` and send
requests on it concurrently (JSON-RPC multiplexes them). A stdio backend's session is one server
process (workers/backend_stdio.py); key, limits, retirement and the idle reaper are the same.
A backend's own word that its catalog changed (`notifications/*/list_changed` on a handshake-era
session, a `subscriptions/listen` stream on a 2026-07-28 one) is handed to `on_list_changed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import anyio
import httpx2
from mcp import Client, MCPError
from mcp.client import Transport
from mcp.client.session import IncomingMessage, MessageHandlerFnT
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost
from mcp.types import (
    CONNECTION_CLOSED,
    DiscoverResult,
    PromptListChangedNotification,
    ResourceListChangedNotification,
    ToolListChangedNotification,
)

from shared import backend_errors, metrics
from shared.backend_errors import BackendFailure
from shared.cache import TTLCache
from shared.config import Settings
from shared.gateways import netguard
from shared.jobs.schemas import BackendSpec, backend_target
from shared.security import SecretBox
from workers import backend_stdio, interactive
from workers.backend_http import AiohttpTransport, BackendTransport, TransportFailure, transport_failure
from workers.breaker import GatewayHealth
from workers.oauth import Bearer, BearerAuth, ClientCredentials, TokenSource
from workers.progress import CURRENT_CALL, on_backend_log

log = logging.getLogger(__name__)

T = TypeVar("T")

# Pre-2026 protocol revisions negotiate with `initialize`; newer ones are stateless and pinned.
HANDSHAKE_ERA_PREFIX = "2025-"


CONNECT_FAILURE_MEMORY_S = 2.0


class BackendConnectError(ConnectionError):
    """Connecting to the backend failed moments ago; not retried yet."""


class BackendTransportError(ConnectionError):
    """A call's HTTP exchange with the backend failed (connect, reset, closed before the answer)."""


# Called once before a call that may have reached the backend is sent again (the job counts it).
OnRetry = Callable[[], Awaitable[None]]
# Told the gateway id of a backend that said its tools, resources or prompts changed.
OnListChanged = Callable[[str], None]

LIST_CHANGED = (ToolListChangedNotification, ResourceListChangedNotification, PromptListChangedNotification)


@dataclass(frozen=True)
class ListChanges:
    """Which of its lists a backend says it reports changes of."""

    tools: bool
    resources: bool
    prompts: bool

    @property
    def any(self) -> bool:
        return self.tools or self.resources or self.prompts


@dataclass(eq=False)  # identity: sessions go in sets and lists
class PooledSession:
    key: str
    gateway_id: str
    client: Client
    stop: asyncio.Event
    owner: asyncio.Task[None] | None = None
    in_flight: int = 0
    last_used: float = field(default_factory=time.monotonic)
    # The owner task has ended: the session is gone.
    dead: bool = False
    # Out of the pool: takes no new calls, and stops once the calls still on it have ended.
    retired: bool = False

    @property
    def live(self) -> bool:
        # `stop` is also set when a stdio server's process has exited.
        return not (self.dead or self.retired or self.stop.is_set())


class SessionPool:
    def __init__(
        self,
        settings: Settings,
        secrets: SecretBox,
        health: GatewayHealth | None = None,
        on_list_changed: OnListChanged | None = None,
    ) -> None:
        self._settings = settings
        self._secrets = secrets
        self._allowed = settings.allowed_networks
        # Per-gateway outcomes of calls, for the circuit breaker the API reads (None: not reported).
        self._health = health
        self._on_list_changed = on_list_changed
        self.tokens = TokenSource(self._allowed, settings.mcp_connect_timeout_s)
        # Decrypted headers (and OAuth settings, stdio env) by ciphertext: a gateway's ciphertext
        # is the same in every job (the API copies the stored value), so each is decrypted once,
        # not once per call.
        self._secrets_open: TTLCache[str, dict[str, str]] = TTLCache(settings.mcp_session_idle_s, 1024)
        self._keys: TTLCache[tuple[object, ...], str] = TTLCache(settings.mcp_session_idle_s, 1024)
        # Live sessions per backend key (for stdio: one server process each). A session carries
        # many concurrent calls; past `mcp_session_max_calls` in flight on each, another one is
        # opened (why 16: shared/config.py; a stdio server works through its stdin in order).
        self._sessions: dict[str, list[PooledSession]] = {}
        # Retired sessions whose last calls are still running, so `close` can end them too.
        self._retired: set[PooledSession] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        # How each backend was reached, so reconnects skip the `server/discover` probe:
        # "legacy" (initialize), or a modern version plus the DiscoverResult the probe returned.
        self._modes: dict[str, tuple[str, DiscoverResult | None]] = {}
        self._reaper: asyncio.Task[None] | None = None
        # Backends that just failed to connect (when, why, and the error type if it is already
        # known): jobs queued behind the lock fail fast instead of each waiting out its own
        # connect timeout in turn.
        self._recent_failures: dict[str, tuple[float, str, str | None]] = {}
        backend_stdio.quiet_sdk_parse_errors()
        # One TLS context for every session's HTTP client: building one reads the CA bundle,
        # 26 ms of CPU per session opened (a burst of slow calls opens dozens at once).
        self._tls: ssl.SSLContext | None = None

    @property
    def open_sessions(self) -> int:
        return sum(1 for group in self._sessions.values() for s in group if s.live)

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_idle())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        sessions = [s for group in self._sessions.values() for s in group] + list(self._retired)
        self._sessions.clear()
        for session in sessions:
            await self._close(session)
        await self.tokens.close()
        if self._health is not None:
            await self._health.close()

    async def use(
        self,
        spec: BackendSpec,
        operation: Callable[[Client], Awaitable[T]],
        *,
        retry_safe: bool = False,
        on_retry: OnRetry | None = None,
    ) -> T:
        """Run `operation` on a live session to `spec`; send it again, once, on a fresh session when
        that cannot run it twice by surprise.

        Sent again: a request the server refused (expired Mcp-Session-Id) or never received
        (connect failure, closed session), and, when `retry_safe`, one whose connection broke
        after it was sent (`on_retry` is called first: that is another attempt). Otherwise a
        broken connection raises BackendTransportError. Either way the broken session is retired
        once, by the first call that sees it fail; calls still on it finish there.
        """
        resent = False
        while True:
            session = await self._checkout(spec)
            try:
                result = await operation(session.client)
            except (MCPError, anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
                failure = self._failed(spec, session, exc)
                if failure is None:
                    raise
                if not resent and (not ran(failure) or retry_safe):
                    resent = True
                    if ran(failure) and on_retry is not None:
                        await on_retry()
                    continue
                broken = BackendTransportError(failure.reason)
                self._report_failure(spec, broken)
                raise broken from exc
            finally:
                session.in_flight -= 1
                session.last_used = time.monotonic()
                if session.retired and session.in_flight == 0:
                    session.stop.set()
            self._report(spec, ok=True)
            return result

    async def _checkout(self, spec: BackendSpec) -> PooledSession:
        try:
            session = await self._get(spec)
        except netguard.RefusedAddress:
            raise  # refused by policy, not a failure of the backend
        except Exception as exc:
            self._report_failure(spec, exc)
            raise
        session.in_flight += 1
        return session

    def _failed(self, spec: BackendSpec, session: PooledSession, exc: Exception) -> TransportFailure | None:
        """What a failed call says about its session: None if the server answered (an error of its
        own); else the session is retired, and whether the request can have reached the server."""
        if isinstance(exc, MCPError):
            refused = backend_errors.auth_failure(exc)
            if refused is not None:
                # This request could not be authorized; the session itself is fine.
                self._report(spec, ok=False, error=refused)
                return None
            if session_expired(exc):
                # A 404 for an expired Mcp-Session-Id: refused, not run.
                failure: TransportFailure | None = TransportFailure(sent=False, reason=exc.message)
            else:
                failure = failure_of(exc)
            if failure is None:
                self._report(spec, ok=True)  # the server answered: the transport works
                return None
        else:
            # The session's streams were already closed: nothing was sent.
            failure = TransportFailure(sent=False, reason=f"the session had closed ({describe(exc)})")
        self._retire(session)
        return failure

    def _open_sealed(self, sealed: str) -> dict[str, str]:
        """Decrypted (ValueError if no configured key opens it)."""
        plain = self._secrets_open.get(sealed)
        if plain is None:
            plain = self._secrets.open(sealed)
            self._secrets_open.put(sealed, plain)
        return plain

    def headers(self, spec: BackendSpec) -> dict[str, str]:
        return self._open_sealed(spec["headers_enc"])

    def env(self, spec: BackendSpec) -> dict[str, str]:
        """A stdio server's extra environment, decrypted."""
        return self._open_sealed(spec.get("env_enc", ""))

    def auth(self, spec: BackendSpec) -> dict[str, str]:
        """An HTTP backend's OAuth settings, decrypted ({} for none)."""
        return self._open_sealed(spec.get("auth_enc", ""))

    def bearer(self, spec: BackendSpec) -> Bearer | None:
        """How requests to the backend get their OAuth token; None when it has no `auth`."""
        auth = self.auth(spec)
        return Bearer(self.tokens, ClientCredentials.from_plain(auth)) if auth else None

    def key(self, spec: BackendSpec) -> str:
        """The pool key of `spec` (see _derive_key), remembered by the job's own values: deriving it
        decrypts, encodes and hashes, about 1 % of a worker's CPU per echo call when done each time."""
        sealed = (
            spec["gateway_id"],
            spec["url"],
            spec["transport"],
            spec["headers_enc"],
            spec.get("auth_enc", ""),
            spec.get("command"),
            tuple(spec.get("args") or ()),
            spec.get("cwd"),
            spec.get("env_enc", ""),
        )
        key = self._keys.get(sealed)
        if key is None:
            key = self._derive_key(spec)
            self._keys.put(sealed, key)
        return key

    def _derive_key(self, spec: BackendSpec) -> str:
        """One pooled session per gateway (two registrations of one URL keep separate sessions
        and metrics), URL, transport and decrypted headers and OAuth settings (the ciphertext
        differs each time they are encrypted, so it cannot be the key); for stdio, the command
        line, working directory and decrypted env. Changed credentials open new sessions."""
        fields: list[object] = [
            spec["gateway_id"],
            spec["url"],
            spec["transport"],
            sorted(self.headers(spec).items()),
            sorted(self.auth(spec).items()),
        ]
        if spec["transport"] == "stdio":
            fields += [spec.get("command"), spec.get("args"), spec.get("cwd"), sorted(self.env(spec).items())]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()

    def _report(self, spec: BackendSpec, *, ok: bool, error: str = "") -> None:
        if self._health is not None:
            self._health.note(spec["gateway_id"], ok=ok, error=error)

    def _report_failure(self, spec: BackendSpec, exc: Exception) -> None:
        """A failure to reach the backend, said as a job that met it says it."""
        kind_and_message = backend_errors.explain(exc, backend_target(spec), spec["transport"])
        self._report(spec, ok=False, error=kind_and_message[1])

    def _list_changed(self, spec: BackendSpec) -> None:
        if self._on_list_changed is not None:
            self._on_list_changed(spec["gateway_id"])

    def _least_busy(self, key: str) -> PooledSession | None:
        live = [s for s in self._sessions.get(key, ()) if s.live]
        return min(live, key=lambda s: s.in_flight) if live else None

    async def _get(self, spec: BackendSpec) -> PooledSession:
        key = self.key(spec)
        limit = self._settings.mcp_session_max_calls
        session = self._least_busy(key)
        if session is not None and session.in_flight < limit:
            return session
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            session = self._least_busy(key)
            if session is not None and (
                session.in_flight < limit or len(self._sessions[key]) >= self._max_sessions(spec)
            ):
                return session
            failed = self._recent_failures.get(key)
            if failed is not None and time.monotonic() - failed[0] < CONNECT_FAILURE_MEMORY_S:
                _, reason, kind = failed
                raise BackendConnectError(reason) if kind is None else BackendFailure(kind, reason)
            try:
                session = await self._open(key, spec)
            except Exception as exc:
                cause = innermost(exc)
                failure = failure_of(cause) if isinstance(cause, MCPError) else None
                if isinstance(cause, BackendFailure):  # already explained, with its error type
                    self._recent_failures[key] = (time.monotonic(), str(cause), cause.kind)
                else:
                    reason = failure.reason if failure else describe(exc)
                    self._recent_failures[key] = (time.monotonic(), reason, None)
                if failure is not None:
                    # The handshake's POST failed in our transport: say so as a connection error.
                    raise BackendTransportError(failure.reason) from exc
                raise
            self._recent_failures.pop(key, None)
            self._sessions.setdefault(key, []).append(session)
            return session

    def _max_sessions(self, spec: BackendSpec) -> int:
        if spec["transport"] == "stdio":
            return self._settings.stdio_max_processes
        return self._settings.mcp_max_sessions_per_backend

    async def _open(self, key: str, spec: BackendSpec) -> PooledSession:
        mode, prior = self._modes.pop(key, ("auto", None))
        ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        # The session outlives the job that opens it: what arrives outside any call (the standalone
        # stream) must not be taken for that job's (workers/progress.py, workers/interactive.py).
        context = contextvars.copy_context()
        context.run(CURRENT_CALL.set, None)
        context.run(interactive.current.set, None)
        owner = asyncio.create_task(
            self._own(spec, mode, prior, ready, stop), name=f"mcp-session {spec['gateway']}", context=context
        )
        # A stdio server's handshake is bounded by the connect timeout inside `connect`, which then
        # stops the process before it says why: wait for that answer.
        limit = self._settings.mcp_connect_timeout_s
        if spec["transport"] == "stdio":
            limit += backend_stdio.TEARDOWN_S
        try:
            client = await asyncio.wait_for(asyncio.shield(ready), limit)
        except BaseException:
            stop.set()
            owner.cancel()
            with contextlib.suppress(BaseException):
                await owner
            raise
        session = PooledSession(key=key, gateway_id=spec["gateway_id"], client=client, stop=stop, owner=owner)
        gauge = metrics.MCP_SESSIONS.labels(spec["gateway"])
        gauge.inc()

        def ended(_: object) -> None:
            session.dead = True
            self._remove(session)
            self._retired.discard(session)
            gauge.dec()

        owner.add_done_callback(ended)
        version = client.protocol_version
        # Remembered only once a connect has worked: a failed one falls back to a fresh probe.
        if version.startswith(HANDSHAKE_ERA_PREFIX):
            self._modes[key] = ("legacy", None)
        elif client.session.discover_result is not None:
            self._modes[key] = (version, client.session.discover_result)
        log.info("opened MCP session to %s (%s, protocol %s)", spec["gateway"], backend_target(spec), version)
        return session

    async def _own(
        self,
        spec: BackendSpec,
        mode: str,
        prior: DiscoverResult | None,
        ready: asyncio.Future[Client],
        stop: asyncio.Event,
    ) -> None:
        try:
            # A stdio server that exits ends its session at once (`stop`), so the next call starts
            # a new process instead of failing on the dead one.
            async with (
                self.connect(spec, mode, prior, on_end=stop.set, follow=True) as client,
                self._listening(spec, client),
            ):
                ready.set_result(client)
                await stop.wait()
        except BaseException as exc:
            owner_ended(ready, exc, f"MCP session to {spec['gateway']}")
            if isinstance(exc, asyncio.CancelledError):
                raise

    @contextlib.asynccontextmanager
    async def _listening(self, spec: BackendSpec, client: Client) -> AsyncIterator[None]:
        """While the session lives, a 2026-07-28 backend that can say its lists changed is
        listened to (`subscriptions/listen`); older sessions get list_changed notifications in
        `connect`'s message handler without asking."""
        caps = client.server_capabilities
        wanted = ListChanges(
            tools=bool(caps.tools and caps.tools.list_changed),
            resources=bool(caps.resources and caps.resources.list_changed),
            prompts=bool(caps.prompts and caps.prompts.list_changed),
        )
        modern = not client.protocol_version.startswith(HANDSHAKE_ERA_PREFIX)
        if self._on_list_changed is None or not modern or not wanted.any:
            yield
            return
        listener = asyncio.create_task(
            self._listen(spec, client, wanted), name=f"mcp-listen {spec['gateway']}"
        )
        try:
            yield
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self, spec: BackendSpec, client: Client, wanted: ListChanges) -> None:
        try:
            async with client.listen(
                tools_list_changed=wanted.tools,
                resources_list_changed=wanted.resources,
                prompts_list_changed=wanted.prompts,
            ) as subscription:
                async for _ in subscription:
                    self._list_changed(spec)
        except (ListenNotSupportedError, SubscriptionLost, MCPError, TimeoutError) as exc:
            # Not fatal: the catalog then follows the backend only through manual refreshes.
            log.info("not listening to %s for list changes: %s", spec["gateway"], describe(exc))

    def _message_handler(self, spec: BackendSpec, then: MessageHandlerFnT | None) -> MessageHandlerFnT:
        async def handle(message: IncomingMessage) -> None:
            if isinstance(message, LIST_CHANGED):
                self._list_changed(spec)
            if then is not None:
                await then(message)

        return handle

    @contextlib.asynccontextmanager
    async def connect(
        self,
        spec: BackendSpec,
        mode: str = "auto",
        prior: DiscoverResult | None = None,
        on_end: Callable[[], None] | None = None,
        *,
        message_handler: MessageHandlerFnT | None = None,
        follow: bool = False,
    ) -> AsyncIterator[Client]:
        """A session of its own to `spec`, outside the pool (discovery and resource subscriptions
        use this). `on_end` is called if the backend goes away by itself (a stdio server's process
        exits); `message_handler` receives the backend's notifications. With `follow`, its
        list_changed notifications are passed on too (pooled sessions only: a backend that
        announced a change to every new session must not make each discovery start another)."""
        s = self._settings
        handler = self._message_handler(spec, message_handler) if follow else message_handler

        def client_on(transport: Transport) -> Client:
            # The same client, callbacks and all, over every transport.
            return Client(
                transport,
                mode=mode,
                prior_discover=prior,
                cache=None,
                logging_callback=on_backend_log,
                message_handler=handler,
                # A backend's questions go to the job's caller (workers/interactive.py).
                elicitation_callback=interactive.elicit,
                sampling_callback=interactive.sample,
            )

        if spec["transport"] == "stdio":
            async with backend_stdio.connect(
                spec,
                self.env(spec),
                client_on,
                allowed=s.stdio_commands,
                connect_timeout_s=s.mcp_connect_timeout_s,
                on_end=on_end,
            ) as client:
                yield client
            return
        headers = self.headers(spec)
        bearer = self.bearer(spec)
        # The API checked the URL at registration; check again what it resolves to now (this
        # narrows, but cannot close, the DNS rebinding window: see shared/gateways/netguard.py).
        await netguard.check_url(spec["url"], self._allowed)
        if bearer is not None:
            # A token before the handshake: without one, fail here with the token endpoint's word.
            await self.tokens.token(bearer.credentials)
        if spec["transport"] == "sse":
            transport = sse_client(
                spec["url"],
                headers=headers,
                timeout=s.mcp_connect_timeout_s,
                sse_read_timeout=s.mcp_session_idle_s + 60,
                auth=BearerAuth(bearer) if bearer is not None else None,
            )
            async with client_on(transport) as client:
                yield client
            return
        async with (
            httpx2.AsyncClient(
                headers=headers,
                # No read timeout here: each request carries its own (the job's backend timeout).
                timeout=httpx2.Timeout(s.mcp_connect_timeout_s, read=None, pool=None),
                transport=BackendTransport(
                    AiohttpTransport(
                        self._tls_context(),
                        max_connections=max(s.mcp_http_max_connections, s.worker_max_jobs),
                        keepalive_s=s.mcp_http_keepalive_s,
                    ),
                    bearer,
                ),
            ) as http,
            # Parsed once here, not by httpx2 on each of the session's requests (a regex quoting
            # pass, 5 % of a worker's CPU on echo calls). The SDK annotates `url` as str, but only
            # hands it to its request helpers, which take `httpx2.URL | str`.
            client_on(streamable_http_client(cast(str, httpx2.URL(spec["url"])), http_client=http)) as client,
        ):
            yield client

    def retire_gateway(self, gateway_id: str) -> None:
        """The gateway was deleted, or moved to another URL or credential: its sessions take no
        new calls and close when their calls end (with them their streams to the backend)."""
        for group in list(self._sessions.values()):
            for session in list(group):
                if session.gateway_id == gateway_id:
                    self._retire(session)

    def _tls_context(self) -> ssl.SSLContext:
        """httpx2's default verifying context (system CAs, SSL_CERT_FILE/DIR), made once."""
        if self._tls is None:
            self._tls = httpx2.create_ssl_context()
        return self._tls

    def _retire(self, session: PooledSession) -> None:
        """Take `session` out of the pool; it stops when its last call ends. Calling it again (every
        caller whose call failed on the session does) changes nothing."""
        if session.retired:
            return
        session.retired = True
        self._remove(session)
        if session.in_flight == 0:
            session.stop.set()
        elif not session.dead:
            self._retired.add(session)

    def _remove(self, session: PooledSession) -> None:
        group = self._sessions.get(session.key)
        if group is not None and session in group:
            group.remove(session)
            if not group:
                del self._sessions[session.key]

    async def _close(self, session: PooledSession) -> None:
        session.dead = True
        session.stop.set()
        if session.owner is not None:
            try:
                await asyncio.wait_for(session.owner, 5)
            except BaseException:  # closing is best effort; a stuck transport must not block shutdown
                session.owner.cancel()

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, self._settings.mcp_session_idle_s))
            cutoff = time.monotonic() - self._settings.mcp_session_idle_s
            for group in list(self._sessions.values()):
                for session in list(group):
                    if session.in_flight == 0 and session.last_used < cutoff:
                        self._retire(session)


def owner_ended(ready: asyncio.Future[Any], exc: BaseException, what: str) -> None:
    """A session's owner task ended with `exc`: the opener still waiting on `ready` gets the
    error (or, for a cancelled open, which is the opener's own doing, a cancelled future); a
    session that was up is logged as ended. The caller re-raises a cancellation."""
    if not ready.done():
        if isinstance(exc, asyncio.CancelledError):
            ready.cancel()
        else:
            ready.set_exception(exc)
    elif not isinstance(exc, asyncio.CancelledError):
        log.info("%s ended: %s", what, describe(exc))


def session_expired(exc: MCPError) -> bool:
    """Servers spell "your session is gone" differently: the Python SDK answers -32600 "Session
    not found", the TypeScript SDK -32001 (the code clients also use for their own timeouts), and
    this client turns a bare 404 into "Session terminated". The message is what they share."""
    message = exc.message.lower()
    return "session" in message and any(word in message for word in ("not found", "terminated", "expired"))


def failure_of(exc: MCPError) -> TransportFailure | None:
    """How the connection failed, if `exc` says it did: our transport marks the failures it turns
    into errors; a bare CONNECTION_CLOSED (the session ended, an SSE stream ended before its
    answer) may have come after the request reached the server."""
    marked = transport_failure(exc)
    if marked is not None:
        return marked
    return TransportFailure(sent=True, reason=exc.message) if exc.code == CONNECTION_CLOSED else None


def innermost(exc: BaseException) -> BaseException:
    """The first exception inside the ExceptionGroups that anyio task groups raise."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def ran(failure: TransportFailure) -> bool:
    """Whether the operation whose request failed may have had an effect on the server. The SDK
    lists the tools after the first call of each tool (to check its output schema), so a
    tools/list that was never sent may still come after a tools/call that ran."""
    return failure.sent or failure.method == "tools/list"


def describe(exc: BaseException) -> str:
    """A one-line reason, looking inside the ExceptionGroups that anyio task groups raise."""
    exc = innermost(exc)
    if isinstance(exc, BackendConnectError | BackendTransportError):
        return str(exc)  # already a reason
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
