"""What the front door pushes to MCP clients outside a call's response: list changes when a
server's catalog changes (2025 GET stream and 2026-07-28 `subscriptions/listen`), resource
updates on a listen stream, and task status on a listen stream (the tasks extension's
`tasksStatus`). Resource subscriptions across two API processes are in tests/test_replicas.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
from arq.worker import Worker
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.subscriptions import ResourceUpdated, ToolsListChanged
from mcp_types import CLIENT_CAPABILITIES_META_KEY, PROTOCOL_VERSION_META_KEY

from shared.config import Settings
from shared.redis import make_redis
from tests.backends import Backends
from tests.conformance.fixture_backend import FixtureBackend
from tests.conftest import unique
from tests.test_mcp_frontdoor import TasksExtension

WATCHED = "test://watched-resource"


@dataclass
class World:
    url: str
    server_id: str
    gateway: dict[str, Any]
    spare: dict[str, Any]  # a second gateway, whose items the server also shows
    member: str

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.member}"}


@pytest.fixture
async def world(
    client: httpx.AsyncClient, backends: Backends, worker: Worker, api_url: str
) -> AsyncIterator[World]:
    team = (await client.post("/v1/teams", json={"name": unique("pushes")})).json()
    made = []
    for kind in ("stateful", "handshake"):
        gateway = await client.post(
            "/v1/gateways", json={"name": unique(), "url": backends.urls[kind], "team": team["id"]}
        )
        assert gateway.status_code == 201, gateway.text
        made.append(gateway.json())
    a, b = made[0]["name"], made[1]["name"]
    server = await client.post(
        "/v1/servers",
        json={
            "name": "pushes",
            "team": team["id"],
            "tools": [f"{a}.echo", f"{a}.touch", f"{a}.hold"],
            "resources": [f"{a}:{WATCHED}", f"{b}:demo://readme"],
            "prompts": [f"{a}.greet"],
        },
    )
    assert server.status_code == 201, server.text
    token = await client.post("/v1/tokens", json={"name": "m", "team": team["id"], "role": "member"})
    body = server.json()
    yield World(f"{api_url}{body['mcp_path']}", body["id"], made[0], made[1], token.json()["token"])
    await client.delete(f"/v1/teams/{team['id']}")


class Inbox:
    def __init__(self) -> None:
        self.methods: asyncio.Queue[str] = asyncio.Queue()

    async def __call__(self, message: Any) -> None:
        if not isinstance(message, Exception):
            await self.methods.put(message.method)

    async def next(self) -> str:
        return await asyncio.wait_for(self.methods.get(), 20)


@contextlib.asynccontextmanager
async def legacy_client(world: World, inbox: Inbox) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers=world.auth(), timeout=httpx2.Timeout(30, read=None)) as http,
        Client(
            streamable_http_client(world.url, http_client=http),  # type: ignore[arg-type]
            mode="legacy",
            message_handler=inbox,
        ) as mcp,
    ):
        yield mcp


async def test_list_changed_reaches_a_2025_client(world: World, client: httpx.AsyncClient) -> None:
    """A membership edit sends the list it changed (and no other); deleting a gateway sends the
    lists its items were on; an edit that changes nothing sends nothing."""
    inbox = Inbox()
    async with legacy_client(world, inbox) as mcp:
        caps = mcp.server_capabilities
        assert caps.tools is not None and caps.tools.list_changed is True
        assert caps.prompts is not None and caps.prompts.list_changed is True
        assert caps.resources is not None and caps.resources.list_changed and caps.resources.subscribe
        await mcp.list_tools()
        await asyncio.sleep(0.3)  # the GET stream opens after initialize
        a = world.gateway["name"]
        edit = await client.patch(f"/v1/servers/{world.server_id}", json={"tools": [f"{a}.echo"]})
        assert edit.status_code == 200, edit.text
        assert await inbox.next() == "notifications/tools/list_changed"
        assert [t.name for t in (await mcp.list_tools()).tools] == ["echo"]

        same = await client.patch(f"/v1/servers/{world.server_id}", json={"tools": [f"{a}.echo"]})
        assert same.status_code == 200
        deleted = await client.delete(f"/v1/gateways/{world.spare['id']}")
        assert deleted.status_code == 204, deleted.text
        assert await inbox.next() == "notifications/resources/list_changed"
        assert inbox.methods.empty()  # nothing for the edit that changed nothing
        assert [r.uri for r in (await mcp.list_resources()).resources] == [WATCHED]


async def test_a_refresh_that_drops_a_member_tells_the_clients(
    world: World, client: httpx.AsyncClient, backends: Backends
) -> None:
    """A gateway refresh that changes nothing the server shows sends nothing; one that drops a
    tool the server shows sends `tools/list_changed`."""
    name = f"ephemeral_{uuid.uuid4().hex[:8]}"
    backends.server.add_tool(lambda: "here", name=name)
    gateway = world.gateway
    try:
        refreshed = await client.post(f"/v1/gateways/{gateway['id']}/refresh")
        assert refreshed.status_code == 200, refreshed.text
        tools = [f"{gateway['name']}.echo", f"{gateway['name']}.{name}"]
        composed = await client.patch(f"/v1/servers/{world.server_id}", json={"tools": tools})
        assert composed.status_code == 200, composed.text
        inbox = Inbox()
        async with legacy_client(world, inbox) as mcp:
            assert [t.name for t in (await mcp.list_tools()).tools] == ["echo", name]
            await asyncio.sleep(0.3)  # the GET stream opens after initialize
            unchanged = await client.post(f"/v1/gateways/{gateway['id']}/refresh")
            assert unchanged.status_code == 200
            backends.server.remove_tool(name)
            dropped = await client.post(f"/v1/gateways/{gateway['id']}/refresh")
            assert dropped.status_code == 200
            assert await inbox.next() == "notifications/tools/list_changed"
            assert inbox.methods.empty()  # one message: the unchanged refresh sent none
            assert [t.name for t in (await mcp.list_tools()).tools] == ["echo"]
    finally:
        with contextlib.suppress(Exception):
            backends.server.remove_tool(name)


async def test_listen_stream_gets_list_changes_and_resource_updates(
    world: World, client: httpx.AsyncClient, backends: Backends
) -> None:
    """2026-07-28: one `subscriptions/listen` stream carries the list changes and the updates of
    the resources it named (a worker holds the backend's subscription); a URI the server lacks
    is left out of the acknowledgement."""
    async with (
        httpx2.AsyncClient(headers=world.auth(), timeout=httpx2.Timeout(30, read=None)) as http,
        Client(streamable_http_client(world.url, http_client=http)) as mcp,  # type: ignore[arg-type]
    ):
        assert mcp.protocol_version == "2026-07-28"
        caps = mcp.server_capabilities
        assert caps.tools is not None and caps.tools.list_changed is True
        async with mcp.listen(
            tools_list_changed=True, resource_subscriptions=[WATCHED, "demo://nope"]
        ) as sub:
            assert sub.honored.tools_list_changed is True
            assert sub.honored.resource_subscriptions == [WATCHED]
            events = aiter(sub)
            touched = await mcp.call_tool("touch", {"uri": WATCHED})
            assert touched.is_error is False
            assert await asyncio.wait_for(anext(events), 20) == ResourceUpdated(uri=WATCHED)
            a = world.gateway["name"]
            edit = await client.patch(f"/v1/servers/{world.server_id}", json={"tools": [f"{a}.touch"]})
            assert edit.status_code == 200
            assert await asyncio.wait_for(anext(events), 20) == ToolsListChanged()


async def _listen_raw(
    url: str, auth: dict[str, str], notifications: dict[str, Any], tasks: bool
) -> httpx.Response:
    """Open a 2026-07-28 `subscriptions/listen` by hand (the SDK's helper has no extension keys)."""
    capabilities: dict[str, Any] = {"extensions": {"io.modelcontextprotocol/tasks": {}}} if tasks else {}
    body = {
        "jsonrpc": "2.0",
        "id": "listen-tasks",
        "method": "subscriptions/listen",
        "params": {
            "notifications": notifications,
            "_meta": {
                PROTOCOL_VERSION_META_KEY: "2026-07-28",
                CLIENT_CAPABILITIES_META_KEY: capabilities,
                "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
            },
        },
    }
    headers = {
        **auth,
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "subscriptions/listen",
    }
    http = httpx.AsyncClient(timeout=httpx.Timeout(30, read=None))
    request = http.build_request("POST", url, json=body, headers=headers)
    response = await http.send(request, stream=True)
    response.extensions["owner"] = http
    return response


async def _frames(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    async for line in response.aiter_lines():
        if line.startswith("data:") and line[5:].strip():
            yield json.loads(line[5:])


async def test_task_status_on_a_listen_stream(world: World, backends: Backends) -> None:
    """The tasks extension's `tasksStatus`: the stream says where the task stands, then sends
    its `DetailedTask` when it completes; without the extension declared it is refused."""
    refused = await _listen_raw(world.url, world.auth(), {"tasksStatus": ["x"]}, tasks=False)
    try:
        text = (await refused.aread()).decode()
        assert "-32021" in text or "capabilit" in text.lower(), text
    finally:
        await refused.aclose()
        await refused.extensions["owner"].aclose()

    key = uuid.uuid4().hex
    gate = backends.gate(key)
    async with (
        httpx2.AsyncClient(headers=world.auth(), timeout=httpx2.Timeout(30, read=None)) as http,
        Client(
            streamable_http_client(world.url, http_client=http),  # type: ignore[arg-type]
            extensions=[TasksExtension()],
        ) as mcp,
    ):
        handle = await mcp.session.call_tool("hold", {"key": key}, allow_claimed=True)
        task_id = handle.task_id  # type: ignore[union-attr]
        unknown = uuid.uuid4().hex
        response = await _listen_raw(world.url, world.auth(), {"tasksStatus": [task_id, unknown]}, tasks=True)
        try:
            frames = aiter(_frames(response))
            ack = await asyncio.wait_for(anext(frames), 20)
            assert ack["method"] == "notifications/subscriptions/acknowledged"
            assert ack["params"]["notifications"]["tasksStatus"] == [task_id]
            assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "listen-tasks"
            first = await asyncio.wait_for(anext(frames), 20)
            assert first["method"] == "notifications/tasks/status"
            assert (first["params"]["taskId"], first["params"]["status"]) == (task_id, "working")
            assert await asyncio.to_thread(gate.entered.wait, 10)
            gate.release()
            done = await asyncio.wait_for(anext(frames), 20)
            assert (done["params"]["taskId"], done["params"]["status"]) == (task_id, "completed")
            assert done["params"]["result"]["content"][0]["text"] == f"released {key}"
            assert done["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "listen-tasks"
        finally:
            await response.aclose()
            await response.extensions["owner"].aclose()


async def _subscribed_server(client: httpx.AsyncClient, url: str, api_url: str) -> tuple[World, str]:
    """A team, a gateway on `url` and a server with its `test://watched-resource` and `touch`."""
    team = (await client.post("/v1/teams", json={"name": unique("subs")})).json()
    gateway = await client.post("/v1/gateways", json={"name": unique(), "url": url, "team": team["id"]})
    assert gateway.status_code == 201, gateway.text
    name = gateway.json()["name"]
    # The fixture has no `touch`; the test backend has.
    tools = [f"{name}.touch"] if '"server_name":"mcpq-test-backend"' in gateway.text.replace(" ", "") else []
    server = await client.post(
        "/v1/servers",
        json={"name": "subs", "team": team["id"], "resources": [f"{name}:{WATCHED}"], "tools": tools},
    )
    assert server.status_code == 201, server.text
    token = await client.post("/v1/tokens", json={"name": "m", "team": team["id"], "role": "member"})
    body = server.json()
    world = World(f"{api_url}{body['mcp_path']}", body["id"], gateway.json(), {}, token.json()["token"])
    return world, team["id"]


async def _subscribe(mcp: Client, uri: str, *, unsubscribe: bool = False) -> None:
    request: types.SubscribeRequest | types.UnsubscribeRequest = (
        types.UnsubscribeRequest(params=types.UnsubscribeRequestParams(uri=uri))
        if unsubscribe
        else types.SubscribeRequest(params=types.SubscribeRequestParams(uri=uri))
    )
    await mcp.session.send_request(request, types.EmptyResult)


async def test_a_2026_backend_without_listen_is_subscribed_on_a_handshake_session(
    client: httpx.AsyncClient, backends: Backends, worker: Worker, api_url: str
) -> None:
    """The backend speaks 2026-07-28 but serves no `subscriptions/listen`: the worker subscribes
    with `resources/subscribe` on a session of the handshake era; the update reaches the client;
    unsubscribing the only client unsubscribes the backend."""
    world, team = await _subscribed_server(client, backends.urls["nolisten"], api_url)
    watched = backends.watched
    subscribed, unsubscribed = watched.subscribed.count(WATCHED), watched.unsubscribed.count(WATCHED)
    inbox = Inbox()
    try:
        async with legacy_client(world, inbox) as mcp:
            # Discovered on 2026-07-28, where it declares no subscriptions: not advertised, but a
            # client that subscribes anyway is served.
            await asyncio.sleep(0.3)  # the GET stream opens after initialize
            await _subscribe(mcp, WATCHED)
            assert watched.subscribed.count(WATCHED) == subscribed + 1
            await mcp.call_tool("touch", {"uri": WATCHED})
            assert await inbox.next() == "notifications/resources/updated"
            await _subscribe(mcp, WATCHED, unsubscribe=True)
            for _ in range(400):  # the holder hears of it on pub/sub, then unsubscribes the backend
                if watched.unsubscribed.count(WATCHED) > unsubscribed:
                    break
                await asyncio.sleep(0.05)
            assert watched.unsubscribed.count(WATCHED) == unsubscribed + 1
    finally:
        await client.delete(f"/v1/teams/{team}")


async def test_subscription_on_the_conformance_fixture(
    client: httpx.AsyncClient,
    fixture_backend: FixtureBackend,
    worker: Worker,
    api_url: str,
    settings: Settings,
) -> None:
    """The conformance fixture (2026-07-28, `subscriptions/listen`): subscribing through the
    gateway makes a worker hold the subscription; unsubscribing the only client drops it."""
    world, team = await _subscribed_server(client, fixture_backend.url, api_url)
    redis = make_redis(settings)
    holders, wanted = settings.key("subs", "holder"), settings.key("subs", "wanted")
    try:
        async with legacy_client(world, Inbox()) as mcp:
            caps = mcp.server_capabilities
            assert caps.resources is not None and caps.resources.subscribe is True
            await _subscribe(mcp, WATCHED)
            assert await redis.hlen(holders) == 1  # type: ignore[misc]
            await _subscribe(mcp, WATCHED, unsubscribe=True)
            assert await redis.hlen(wanted) == 0  # type: ignore[misc]
            for _ in range(400):  # the holder hears of it on pub/sub, then lets go
                if not await redis.hlen(holders):  # type: ignore[misc]
                    break
                await asyncio.sleep(0.05)
            assert await redis.hlen(holders) == 0  # type: ignore[misc]
    finally:
        await redis.aclose()
        await client.delete(f"/v1/teams/{team}")
