"""What a backend sends during a call reaches the MCP client of /v1/servers/{id}/mcp: every
progress update in order, the last before the result, under the client's own token; the
backend's log entries at or above the client's level (`logging/setLevel`, remembered per
session; the per-request opt-in on 2026-07-28), in order with progress; and on a backend session
shared by concurrent calls, each client gets only its own call's notifications.

Driven by the official SDK client against the API on loopback, a worker and the test backends
(tests/backends.py: `burst`, `levels`, `chatty`). Two backends: `stateful` (the worker speaks
2026-07-28 to it: stateless, the log level rides each request) and `handshake` (2025-11-25: a
session with a standalone stream, where the backend's session-level logs arrive).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import mcp_types
import pytest
from arq.worker import Worker
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import LoggingMessageNotificationParams

from shared.jobs.waiters import FEED_BACKLOG, EventFeed
from tests.backends import Backends
from tests.conformance.fixture_backend import FixtureBackend
from tests.conftest import unique

BACKENDS = ("stateful", "handshake")
# How the worker reaches each backend; `sse` (legacy HTTP+SSE) carries a whole session on one
# stream: progress is routed by the SDK's token, logs cannot be told apart and are dropped.
TRANSPORTS = {"stateful": "streamable_http", "handshake": "streamable_http", "sse": "sse"}
# The client's `set_logging_level` warns that 2026-07-28 deprecated logging; it is what is tested.
pytestmark = pytest.mark.filterwarnings("ignore:The logging capability is deprecated")


@dataclass
class World:
    urls: dict[str, str]  # backend kind -> the MCP endpoint of a server on it
    member: str
    gateways: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
async def world(
    client: httpx.AsyncClient, backends: Backends, worker: Worker, api_url: str
) -> AsyncIterator[World]:
    team = (await client.post("/v1/teams", json={"name": unique("relay")})).json()
    urls, gateways = {}, {}
    for kind, transport in TRANSPORTS.items():
        made = await client.post(
            "/v1/gateways",
            json={"name": unique(), "url": backends.urls[kind], "transport": transport, "team": team["id"]},
        )
        assert made.status_code == 201, made.text
        gateway = gateways[kind] = made.json()
        name = gateway["name"]
        server = await client.post(
            "/v1/servers",
            json={
                "name": f"relay-{kind}",
                "team": team["id"],
                "tools": [f"{name}.{tool}" for tool in ("burst", "levels", "chatty")],
            },
        )
        assert server.status_code == 201, server.text
        urls[kind] = f"{api_url}{server.json()['mcp_path']}"
    minted = await client.post("/v1/tokens", json={"name": "m", "team": team["id"], "role": "member"})
    yield World(urls=urls, member=minted.json()["token"], gateways=gateways)
    await client.delete(f"/v1/teams/{team['id']}")


@dataclass
class Seen:
    """What one client received, in arrival order: ("progress", value, message) and ("log", level, data)."""

    events: list[tuple[str, Any, Any]]

    @property
    def progress(self) -> list[Any]:
        return [value for kind, value, _ in self.events if kind == "progress"]

    @property
    def logs(self) -> list[tuple[Any, Any]]:
        return [(level, data) for kind, level, data in self.events if kind == "log"]

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append(("progress", progress, message))

    async def on_log(self, params: LoggingMessageNotificationParams) -> None:
        self.events.append(("log", params.level, params.data))


@contextlib.asynccontextmanager
async def connect(
    world: World, kind: str, seen: Seen, mode: str = "legacy", log_level: Any = None
) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {world.member}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=None)) as http,
        Client(
            streamable_http_client(world.urls[kind], http_client=http),  # type: ignore[arg-type]
            mode=mode,  # type: ignore[arg-type]
            logging_callback=seen.on_log,
            log_level=log_level,
        ) as mcp,
    ):
        yield mcp


def text_of(result: mcp_types.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, mcp_types.TextContent), result
    return block.text


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_every_progress_update_arrives_in_order_and_the_last_before_the_result(
    world: World, kind: str, mode: str
) -> None:
    count = 25
    async with connect(world, kind, Seen([]), mode) as mcp:
        # Repeated: the last update and the result leave the backend back to back, and the worker
        # used to let the result overtake it.
        for _ in range(8):
            seen = Seen([])
            result = await mcp.call_tool("burst", {"count": count}, progress_callback=seen.on_progress)
            assert result.is_error is False, result
            assert seen.progress == list(range(1, count + 1))
            assert [message for _, _, message in seen.events] == [f"{i}/{count}" for i in range(1, count + 1)]


async def test_the_client_token_is_kept_and_the_backend_gets_a_token_of_its_own(world: World) -> None:
    """The backend's notifications come back under the client's token; the backend saw a token
    (the worker's, which the worker maps to the job) and reported against it."""
    tokens: list[Any] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, mcp_types.ProgressNotification):
            tokens.append(message.params.progress_token)

    headers = {"Authorization": f"Bearer {world.member}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=None)) as http,
        Client(
            streamable_http_client(world.urls["handshake"], http_client=http),  # type: ignore[arg-type]
            mode="legacy",
            message_handler=on_message,
        ) as mcp,
    ):
        request = mcp_types.CallToolRequest(
            params=mcp_types.CallToolRequestParams(
                name="burst", arguments={"count": 3}, _meta={"progressToken": "client-token-7"}
            )
        )
        result = await mcp.session.send_request(request, mcp_types.CallToolResult)
    backend_token = text_of(result).removeprefix("token=")
    assert backend_token not in ("None", "client-token-7")
    assert tokens == ["client-token-7"] * 3


async def test_set_level_filters_the_backend_logs_in_order_with_progress(world: World) -> None:
    seen = Seen([])
    async with connect(world, "handshake", seen) as mcp:
        # No level set: no logs relayed (the worker drops them; nothing crosses Redis).
        quiet = await mcp.call_tool("levels", {}, progress_callback=seen.on_progress)
        assert seen.logs == []
        assert text_of(quiet) == "logged; asked for None"
        assert seen.progress == [1, 2, 3, 4, 5, 6]

        seen.events.clear()
        await mcp.set_logging_level("warning")
        await mcp.call_tool("levels", {}, progress_callback=seen.on_progress)
        # debug, info and notice dropped; the session-level entry (not the call's) dropped too.
        assert seen.events == [
            ("progress", 1, None),
            ("progress", 2, None),
            ("progress", 3, None),
            ("log", "warning", "warning entry"),
            ("progress", 4, None),
            ("log", "error", "error entry"),
            ("progress", 5, None),
            ("log", "critical", "critical entry"),
            ("progress", 6, None),
        ]

        seen.events.clear()
        await mcp.set_logging_level("debug")
        await mcp.call_tool("levels", {})
        assert [level for level, _ in seen.logs] == [
            "debug",
            "info",
            "notice",
            "warning",
            "error",
            "critical",
        ]


async def test_a_log_outside_the_call_is_not_taken_for_the_call_that_opened_the_session(
    client: httpx.AsyncClient, backends: Backends, world: World
) -> None:
    """A fresh gateway: the call that relays logs is the one whose job opens the backend session,
    whose standalone stream then carries a session-level entry during the call."""
    team = (await client.post("/v1/teams", json={"name": unique("relay")})).json()
    made = await client.post(
        "/v1/gateways", json={"name": unique(), "url": backends.urls["handshake"], "team": team["id"]}
    )
    server = await client.post(
        "/v1/servers",
        json={"name": "fresh", "team": team["id"], "tools": [f"{made.json()['name']}.levels"]},
    )
    minted = await client.post("/v1/tokens", json={"name": "m", "team": team["id"], "role": "member"})
    fresh = World(
        urls={"handshake": f"{world.urls['handshake'].split('/v1/')[0]}{server.json()['mcp_path']}"},
        member=minted.json()["token"],
        gateways={},
    )
    seen = Seen([])
    try:
        async with connect(fresh, "handshake", seen) as mcp:
            await mcp.set_logging_level("debug")
            await mcp.call_tool("levels", {})
    finally:
        await client.delete(f"/v1/teams/{team['id']}")
    assert [data for _, data in seen.logs] == [
        f"{level} entry" for level in ("debug", "info", "notice", "warning", "error", "critical")
    ]


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_2026_client_opts_in_per_request(world: World, kind: str) -> None:
    seen = Seen([])
    async with connect(world, kind, seen, mode="2026-07-28", log_level="error") as mcp:
        result = await mcp.call_tool("levels", {})
    assert seen.logs == [("error", "error entry"), ("critical", "critical entry")]
    assert text_of(result) == "logged; asked for error"  # the worker passed the level on


async def test_logs_of_a_backend_with_one_stream_for_everything_are_dropped(world: World) -> None:
    """Legacy HTTP+SSE: nothing says which call a log entry belongs to; progress still arrives."""
    seen = Seen([])
    async with connect(world, "sse", seen) as mcp:
        await mcp.set_logging_level("debug")
        await mcp.call_tool("levels", {}, progress_callback=seen.on_progress)
    assert seen.events == [("progress", i, None) for i in range(1, 7)]


@pytest.mark.parametrize(("kind", "has_session_id"), [("stateful", False), ("handshake", True)])
async def test_concurrent_calls_on_one_backend_session_get_only_their_own(
    world: World, kind: str, has_session_id: bool
) -> None:
    """Two clients call at once; the worker sends both calls on one pooled backend session (the
    2025-era backend names it; the 2026-07-28 one has none: one pooled client), yet each client
    gets only its own call's progress and logs."""
    seens = {tag: Seen([]) for tag in ("a", "b")}

    async def call(tag: str) -> str:
        seen = seens[tag]
        async with connect(world, kind, seen) as mcp:
            await mcp.set_logging_level("info")
            result = await mcp.call_tool("chatty", {"tag": tag}, progress_callback=seen.on_progress)
        return text_of(result)

    for _ in range(3):
        for seen in seens.values():
            seen.events.clear()
        a, b = await asyncio.gather(call("a"), call("b"))
        session_a, session_b = a.split()[1], b.split()[1]
        assert session_a == session_b  # one backend session served both
        assert (session_a != "None") is has_session_id
        for tag, seen in seens.items():
            expected: list[tuple[str, Any, Any]] = []
            for i in range(5):
                expected += [("progress", i, f"{tag} {i}"), ("log", "info", f"{tag} {i}")]
            assert seen.events == expected


async def test_rest_sees_the_last_progress(client: httpx.AsyncClient, world: World) -> None:
    gateway = world.gateways["stateful"]["name"]
    headers = {"Authorization": f"Bearer {world.member}"}
    submitted = await client.post(
        f"/v1/tools/{gateway}.burst/jobs", json={"arguments": {"count": 40}}, headers=headers
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    done = (await client.get(f"/v1/jobs/{job_id}", params={"wait": 10}, headers=headers)).json()
    assert done["status"] == "completed", done
    assert done["progress"] == {"progress": 40, "total": 40, "message": "40/40"}


async def test_a_slow_reader_loses_only_superseded_progress_never_a_log_or_the_last() -> None:
    feed = EventFeed()
    events = []
    for i in range(FEED_BACKLOG + 50):
        events.append({"type": "progress", "progress": i})
        if i % 100 == 0:
            events.append({"type": "log", "level": "info", "data": i})
    for event in events:
        feed.put(event)
    feed.close()
    kept = []
    while (event := await feed.get()) is not None:
        kept.append(event)
    assert len(kept) == FEED_BACKLOG
    assert [e for e in kept if e["type"] == "log"] == [e for e in events if e["type"] == "log"]
    assert kept == [e for e in events if e in kept]  # in order
    assert kept[-1] == events[-1]  # the final update


async def test_the_conformance_fixture_through_the_gateway(
    client: httpx.AsyncClient, world: World, fixture_backend: FixtureBackend
) -> None:
    """What tools-call-with-progress, tools-call-with-logging and logging-set-level check, with
    the SDK client, through the gateway to the conformance fixture backend."""
    team = (await client.post("/v1/teams", json={"name": unique("relay-fixture")})).json()
    try:
        made = await client.post(
            "/v1/gateways", json={"name": unique(), "url": fixture_backend.url, "team": team["id"]}
        )
        assert made.status_code == 201, made.text
        name = made.json()["name"]
        server = await client.post(
            "/v1/servers",
            json={
                "name": "fixture",
                "team": team["id"],
                "tools": [f"{name}.test_tool_with_progress", f"{name}.test_tool_with_logging"],
            },
        )
        assert server.status_code == 201, server.text
        minted = await client.post("/v1/tokens", json={"name": "m", "team": team["id"], "role": "member"})
        api = world.urls["stateful"].split("/v1/")[0]
        fixture = World(
            urls={"fixture": f"{api}{server.json()['mcp_path']}"}, member=minted.json()["token"], gateways={}
        )
        seen = Seen([])
        async with connect(fixture, "fixture", seen) as mcp:
            assert mcp.server_capabilities.logging is not None
            await mcp.set_logging_level("debug")
            await mcp.call_tool("test_tool_with_progress", {}, progress_callback=seen.on_progress)
            assert seen.progress == [0, 50, 100]
            await mcp.call_tool("test_tool_with_logging", {})
            assert [data for _, data in seen.logs] == [
                "Tool execution started",
                "Tool processing data",
                "Tool execution completed",
            ]
    finally:
        await client.delete(f"/v1/teams/{team['id']}")
