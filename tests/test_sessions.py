"""The worker's session pool against real backends behind a TCP proxy that counts and cuts connections."""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from mcp import Client

from shared.config import Settings
from shared.jobs.schemas import BackendSpec
from shared.security import SecretBox
from tests.backends import Backends
from tests.tcp_proxy import TcpProxy
from workers.sessions import BackendTransportError, SessionPool


@pytest.fixture
async def proxy(backends: Backends) -> AsyncIterator[TcpProxy]:
    # The `handshake` backend speaks 2025-11-25: every answer is an SSE body, the case that
    # used to cost a connection per call.
    port = urlsplit(backends.urls["handshake"]).port
    assert port is not None
    proxy = TcpProxy(port)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[SessionPool]:
    sessions = SessionPool(settings, SecretBox.from_settings(settings))
    yield sessions
    await sessions.close()


def spec_for(proxy_port: int) -> BackendSpec:
    return {
        "gateway_id": str(uuid.uuid4()),
        "gateway": "proxied",
        "url": f"http://127.0.0.1:{proxy_port}/mcp",
        "transport": "streamable_http",
        "headers_enc": "",
        "timeout_s": 10,
    }


async def echo(client: Client, text: str) -> str:
    result = await client.call_tool("echo", {"text": text})
    content: Any = result.content[0]
    return str(content.text)


async def test_sse_answers_reuse_one_connection(proxy: TcpProxy, pool: SessionPool) -> None:
    spec = spec_for(proxy.port)
    protocol = await pool.use(spec, lambda c: asyncio.sleep(0, c.protocol_version))
    assert protocol == "2025-11-25"
    await pool.use(spec, lambda c: echo(c, "warm"))
    before = proxy.accepted
    for i in range(30):
        assert await pool.use(spec, lambda c, i=i: echo(c, f"n{i}")) == f"n{i}"
    # Each answer is read to its end, so its connection goes back to the pool.
    assert proxy.accepted - before <= 1


async def hold(client: Client, key: str) -> str:
    result = await client.call_tool("hold", {"key": key})
    content: Any = result.content[0]
    return str(content.text)


async def entered(backends: Backends, *keys: str) -> None:
    for key in keys:
        assert await asyncio.to_thread(backends.gate(key).entered.wait, 10), key


async def test_one_broken_connection_fails_only_its_call(
    proxy: TcpProxy, pool: SessionPool, backends: Backends
) -> None:
    spec = spec_for(proxy.port)
    broken, intact = f"broken-{uuid.uuid4().hex}", f"intact-{uuid.uuid4().hex}"
    for key in (broken, intact):
        backends.gate(key)  # the tool looks its gate up: make it before the call
    calls = {k: asyncio.create_task(pool.use(spec, lambda c, k=k: hold(c, k))) for k in (broken, intact)}
    await entered(backends, broken, intact)
    assert proxy.cut_carrying(broken.encode()) == 1
    with pytest.raises(BackendTransportError):
        await calls[broken]
    # The other call on the same session is untouched and gets its answer.
    backends.gate(intact).release()
    assert await calls[intact] == f"released {intact}"
    # The broken session was retired; the next call is served on a fresh one.
    assert await pool.use(spec, lambda c: echo(c, "after")) == "after"
    assert pool.open_sessions == 1


async def test_broken_session_retries_retry_safe_calls_once_on_one_fresh_session(
    proxy: TcpProxy, pool: SessionPool, backends: Backends, caplog: pytest.LogCaptureFixture
) -> None:
    spec = spec_for(proxy.port)
    safe = [f"safe-{i}-{uuid.uuid4().hex}" for i in range(3)]
    unsafe = [f"unsafe-{i}-{uuid.uuid4().hex}" for i in range(3)]
    for key in safe + unsafe:
        backends.gate(key)
    retries: list[str] = []
    caplog.set_level(logging.INFO, logger="workers.sessions")

    def run(key: str, retry_safe: bool) -> asyncio.Task[str]:
        async def count_retry() -> None:
            retries.append(key)

        return asyncio.create_task(
            pool.use(spec, lambda c: hold(c, key), retry_safe=retry_safe, on_retry=count_retry)
        )

    calls = {key: run(key, True) for key in safe} | {key: run(key, False) for key in unsafe}
    await entered(backends, *safe, *unsafe)
    for key in safe:
        backends.gate(key).reset()
    proxy.cut_all()  # every connection of the session drops at once

    for key in unsafe:
        with pytest.raises(BackendTransportError):
            await calls[key]
    await entered(backends, *safe)  # the retry-safe calls ran again...
    for key in safe:
        backends.gate(key).release()
        assert await calls[key] == f"released {key}"
    assert sorted(retries) == sorted(safe)  # ...each counted once as another attempt
    assert [backends.gate(key).calls for key in safe] == [2, 2, 2]
    assert [backends.gate(key).calls for key in unsafe] == [1, 1, 1]
    opened = [r for r in caplog.records if r.getMessage().startswith("opened MCP session")]
    assert len(opened) == 2  # the first session, and one replacement for all six callers


async def test_refused_connection_fails_only_the_call_that_needed_it(
    proxy: TcpProxy, pool: SessionPool, backends: Backends
) -> None:
    spec = spec_for(proxy.port)
    keys = [f"busy-{i}-{uuid.uuid4().hex}" for i in range(2)]
    for key in keys:
        backends.gate(key)
    # The SDK lists the tools after a tool's first call; have that done now, while it can be.
    await pool.use(spec, lambda c: c.list_tools())
    holds = [asyncio.create_task(pool.use(spec, lambda c, k=key: hold(c, k))) for key in keys]
    await entered(backends, *keys)
    await proxy.refuse()
    # A connection left idle (the listing's, if neither hold took it over) would carry the next
    # call: close it, so every connection left is busy.
    for link in list(proxy.links):
        if not any(key.encode() in link.sent for key in keys):
            link.cut()
            proxy.links.remove(link)
    # Every pooled connection is busy, so this call needs a new one, and is refused. It was not
    # sent, so it is tried once more (on a fresh session, which cannot connect either).
    with pytest.raises(BackendTransportError, match="ConnectError"):
        await pool.use(spec, lambda c: echo(c, "refused"))
    # The SDK alone would have ended the session on that POST's error, failing both holds.
    for key in keys:
        backends.gate(key).release()
    assert await asyncio.gather(*holds) == [f"released {key}" for key in keys]
    assert [backends.gate(key).calls for key in keys] == [1, 1]


async def test_sessions_share_one_tls_context(
    proxy: TcpProxy, pool: SessionPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Building a TLS context reads the CA bundle (26 ms of CPU): once per worker, not per session.
    made = 0
    create = httpx2.create_ssl_context

    def counted() -> ssl.SSLContext:
        nonlocal made
        made += 1
        return create()

    monkeypatch.setattr(httpx2, "create_ssl_context", counted)
    for _ in range(3):  # three gateways: three sessions
        assert await pool.use(spec_for(proxy.port), lambda c: echo(c, "x")) == "x"
    assert pool.open_sessions == 3
    assert made == 1


async def test_an_idle_connection_the_server_closed_is_not_used_again(
    proxy: TcpProxy, pool: SessionPool
) -> None:
    # The worker's pool drops an idle connection the server closed (aiohttp sees the close on
    # the event loop: workers/backend_http.py's AiohttpTransport); sent on it, a call would fail.
    spec = spec_for(proxy.port)
    assert await pool.use(spec, lambda c: echo(c, "warm")) == "warm"
    idle = [link for link in proxy.links if link.sent.startswith(b"POST")]
    assert idle
    for link in idle:
        link.cut()
        proxy.links.remove(link)
    await asyncio.sleep(0.05)  # the reset reaches the worker's sockets
    before = proxy.accepted
    assert await pool.use(spec, lambda c: echo(c, "after")) == "after"
    assert proxy.accepted == before + 1
    assert pool.open_sessions == 1
