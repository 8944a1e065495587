"""stdio backends: the server is a program this worker runs, spoken to over its stdin and stdout.

The SDK's `stdio_client` spawns the program and frames JSON-RPC; this module adds what a pool of
long-lived processes needs around it (workers/sessions.py pools them like HTTP sessions):

- **stderr** goes through a pipe of ours to the worker log, one line per record tagged with the
  gateway, each line cut at `MAX_LINE` characters and at most `LINES_PER_S` lines a second
  (bursts of `BURST`); the first lines are kept for error messages.
- **A handshake that fails says why, quickly.** The program cannot start, exits, writes anything
  on stdout that is not JSON-RPC (the spec forbids it), or does not answer within the connect
  timeout: each is a `BackendFailure` (`backend_unavailable` or `protocol_error`) naming the
  command line and quoting the first lines of its stderr. A non-JSON-RPC line after the
  handshake is logged and ignored, as the SDK does.
- **A process that exits** (crash, kill) calls `on_end` as soon as its stdout closes, so the pool
  drops its session and the next call starts a new process.

The server gets the SDK's minimal environment (HOME, PATH, USER, ...) plus the gateway's `env`,
never the worker's own (which holds MCPQ_SECRET_KEYS).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Self, TextIO

import anyio
from mcp import Client, MCPError, StdioServerParameters
from mcp.client import Transport
from mcp.client.stdio import stdio_client
from mcp.shared._stream_protocols import ReadStream
from mcp.shared.message import SessionMessage
from mcp.types import CONNECTION_CLOSED
from pydantic import ValidationError

from shared.backend_errors import PROTOCOL, UNAVAILABLE, BackendFailure, leaf
from shared.jobs.schemas import BackendSpec, backend_target

log = logging.getLogger(__name__)

MAX_LINE = 1000
LINES_PER_S = 20.0
BURST = 100
# First stderr lines quoted in an error message, each cut to QUOTED_LINE characters.
HEAD_LINES = 5
QUOTED_LINE = 200
# How long a failed handshake waits for the rest of the server's stderr before quoting it.
STDERR_SETTLE_S = 0.5
# The SDK's shutdown of a server: 0.5 s to flush, 2 s to exit once stdin closes, 2 s after
# SIGTERM, 2 s after SIGKILL. A failed handshake reports only once it is done.
TEARDOWN_S = 7.0


class StderrLog(asyncio.Protocol):
    """Reads a server's stderr pipe into the worker log, bounded in line length and rate."""

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway
        self.head: list[str] = []
        self.closed = asyncio.Event()
        self._partial = bytearray()
        self._cut = False  # the line being read was already logged, cut at MAX_LINE
        self._tokens = float(BURST)
        self._refilled = time.monotonic()
        self._dropped = 0

    def data_received(self, data: bytes) -> None:
        self._partial += data
        while (end := self._partial.find(b"\n")) >= 0:
            line = bytes(self._partial[:end])
            del self._partial[: end + 1]
            if self._cut:
                self._cut = False  # the rest of a line already logged
                continue
            self.line(line.decode(errors="replace"))
        if len(self._partial) > MAX_LINE:
            if not self._cut:
                self.line(self._partial.decode(errors="replace"))
                self._cut = True
            self._partial.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._partial and not self._cut:
            self.line(self._partial.decode(errors="replace"))
        self._partial.clear()
        if self._dropped:
            log.warning("stdio %s: %d more stderr lines not logged", self.gateway, self._dropped)
        self.closed.set()

    def line(self, text: str, source: str = "stderr") -> None:
        text = text.rstrip("\r")
        if len(text) > MAX_LINE:
            text = text[:MAX_LINE] + " [cut]"
        if len(self.head) < HEAD_LINES and text.strip():
            self.head.append(text[:QUOTED_LINE])
        if not self._take():
            self._dropped += 1
            return
        if self._dropped:
            log.warning(
                "stdio %s: %d stderr lines not logged (over %g/s)", self.gateway, self._dropped, LINES_PER_S
            )
            self._dropped = 0
        log.info("stdio %s %s: %s", self.gateway, source, text)

    def _take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(float(BURST), self._tokens + (now - self._refilled) * LINES_PER_S)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def settle(self) -> None:
        """Wait (briefly) until the server's stderr has closed, so its last lines are read."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), STDERR_SETTLE_S)

    def quoted(self) -> str:
        if not self.head:
            return "it wrote nothing on stderr"
        return "its stderr began: " + " | ".join(self.head)


class Watch:
    """What the server did on stdout: a line that is not JSON-RPC, or the end of the stream."""

    def __init__(self, stderr: StderrLog) -> None:
        self.stderr = stderr
        self.garbage: str | None = None  # the first such line during the handshake
        self.on_garbage: Callable[[], None] | None = None  # during the handshake only
        self.on_end: Callable[[], None] | None = None  # after the handshake only

    def saw_garbage(self, exc: Exception) -> None:
        line = _offending_line(exc)
        if self.on_garbage is None:
            self.stderr.line(line, "stdout (not JSON-RPC, ignored)")
            return
        if self.garbage is None:
            self.garbage = line[:QUOTED_LINE]
        self.on_garbage()

    def ended(self) -> None:
        if self.on_end is not None:
            log.info("stdio %s: the server's stdout closed (it exited)", self.stderr.gateway)
            self.on_end()


def _offending_line(exc: Exception) -> str:
    """The stdout line the SDK could not parse, from its ValidationError."""
    if isinstance(exc, ValidationError):
        for error in exc.errors():
            if isinstance(error.get("input"), str):
                return str(error["input"])
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class WatchedRead:
    """The transport's read stream, passed through, telling `Watch` what it sees."""

    def __init__(self, inner: ReadStream[SessionMessage | Exception], watch: Watch) -> None:
        self._inner = inner
        self._watch = watch

    async def receive(self) -> SessionMessage | Exception:
        try:
            item = await self._inner.receive()
        except anyio.EndOfStream:
            self._watch.ended()
            raise
        if isinstance(item, Exception):
            self._watch.saw_garbage(item)
        return item

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class _QuietParseErrors(logging.Filter):
    """The SDK logs each stdout line it cannot parse with a traceback; `Watch` reports them
    instead, bounded."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to parse JSONRPC message")


def quiet_sdk_parse_errors() -> None:
    sdk = logging.getLogger("mcp.client.stdio")
    if not any(isinstance(f, _QuietParseErrors) for f in sdk.filters):
        sdk.addFilter(_QuietParseErrors())


@contextlib.asynccontextmanager
async def _stderr_pipe(stderr: StderrLog) -> AsyncIterator[TextIO]:
    """A pipe whose write end becomes the server's stderr and whose read end feeds `stderr`."""
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb", buffering=0)
    writer = os.fdopen(write_fd, "w")
    try:
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(lambda: stderr, reader)
    except BaseException:
        reader.close()
        writer.close()
        raise
    try:
        yield writer
    finally:
        writer.close()
        transport.close()


@contextlib.asynccontextmanager
async def _transport(
    params: StdioServerParameters, errlog: TextIO, watch: Watch
) -> AsyncIterator[tuple[WatchedRead, Any]]:
    async with stdio_client(params, errlog=errlog) as (read, write):
        # The server has its own copy now: the pipe ends (EOF) when the server exits.
        errlog.close()
        yield WatchedRead(read, watch), write


@contextlib.asynccontextmanager
async def connect(
    spec: BackendSpec,
    env: dict[str, str],
    client_on: Callable[[Transport], Client],
    *,
    allowed: frozenset[str],
    connect_timeout_s: float,
    on_end: Callable[[], None] | None = None,
) -> AsyncIterator[Client]:
    """Start the server and hand over a client (made by `client_on` over the server's stdio) once
    it has answered the handshake."""
    command = spec.get("command", "")
    if command not in allowed:
        # The API checked this at registration; this worker's own list has the last word.
        raise BackendFailure(
            UNAVAILABLE, f"this worker may not run {command!r}: not in MCPQ_STDIO_ALLOWED_COMMANDS"
        )
    params = StdioServerParameters(
        command=command, args=spec.get("args", []), env=env or None, cwd=spec.get("cwd")
    )
    stderr = StderrLog(spec["gateway"])
    watch = Watch(stderr)
    async with _stderr_pipe(stderr) as errlog:
        # The scope bounds the handshake (deadline, or a line of garbage cancels it); it stays
        # around the session, harmless once the deadline is lifted, because anyio scopes and the
        # SDK's task groups must be exited in the order they were entered.
        handshake = anyio.CancelScope(deadline=anyio.current_time() + connect_timeout_s)
        watch.on_garbage = handshake.cancel
        entered = False
        try:
            with handshake:
                async with client_on(_transport(params, errlog, watch)) as client:
                    entered = True
                    handshake.deadline = math.inf
                    watch.on_garbage = None
                    watch.on_end = on_end
                    yield client
        except Exception as exc:
            if entered:
                raise
            raise await _failed(spec, stderr, watch, exc, connect_timeout_s) from exc
        if not entered:
            raise await _failed(spec, stderr, watch, None, connect_timeout_s)


async def _failed(
    spec: BackendSpec, stderr: StderrLog, watch: Watch, exc: Exception | None, timeout_s: float
) -> BackendFailure:
    """Why the handshake failed, with the first lines of the server's stderr."""
    await stderr.settle()
    inner = leaf(exc) if exc is not None else None
    if watch.garbage is not None:
        kind, what = PROTOCOL, f"wrote a line on stdout that is not JSON-RPC: {watch.garbage!r}"
    elif inner is None:
        kind, what = UNAVAILABLE, f"did not answer the MCP handshake within {timeout_s:g}s"
    elif isinstance(inner, OSError):
        # The file it names is the command, or the cwd when that is what is missing.
        where = f": {inner.filename}" if inner.filename else ""
        kind, what = UNAVAILABLE, f"could not be started: {inner.strerror or inner}{where}"
    elif isinstance(inner, MCPError) and inner.code == CONNECTION_CLOSED:
        kind, what = UNAVAILABLE, "exited before answering the MCP handshake"
    elif isinstance(inner, MCPError):
        kind, what = PROTOCOL, f"refused the MCP handshake: error {inner.code}: {inner.message}"
    else:
        kind, what = UNAVAILABLE, f"failed during the MCP handshake: {type(inner).__name__}: {inner}"
    return BackendFailure(kind, f"stdio server `{backend_target(spec)}` {what}; {stderr.quoted()}")
