"""Two API processes and two worker processes around one Redis and one PostgreSQL, as a
deployment with replicas runs: one MCP session is served by both APIs, and concurrent REST calls
spread over both get their own answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.extension import ClientExtension, NotificationBinding
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from redis.asyncio import Redis

from shared.config import Settings
from tests.backends import Backends, free_port
from tests.conformance.fixture_backend import FixtureBackend
from tests.conftest import ADMIN_TOKEN, isolated, unique, worker_env

APIS = 2
WORKERS = 2
CALLS = 200
# Short, so that a replica's copy of a session idles out during a test (it is adopted again) and
# the sweep that refreshes or closes sessions runs every 2 s.
SESSION_IDLE_S = 6
ACCEPT = {"Accept": "application/json, text/event-stream"}


@dataclass
class Cluster:
    settings: Settings  # what the processes run with (their own queue and key prefix)
    ports: list[int]
    processes: list[subprocess.Popen[bytes]]
    env: dict[str, str]

    def base(self, api: int) -> str:
        return f"http://127.0.0.1:{self.ports[api]}"

    def check_alive(self) -> None:
        for proc in self.processes:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "a process exited"


def _start_api(env: dict[str, str]) -> tuple[int, subprocess.Popen[bytes]]:
    """An API process (uvicorn) on a free loopback port, once it answers /health. A port picked
    by bind-and-close can be taken before uvicorn binds it: then try another."""
    for _ in range(3):
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    return port, proc
            except httpx.TransportError:
                time.sleep(0.1)
        proc.kill()
        proc.wait()
    raise AssertionError("the API process did not start")


def _start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "workers"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


@pytest.fixture(scope="module")
def cluster(settings: Settings) -> Iterator[Cluster]:
    # A queue and key prefix of their own: only these processes see these jobs and sessions.
    own = isolated(settings)
    env = {
        **worker_env(own),
        "MCPQ_RUN_MIGRATIONS": "false",
        "MCPQ_MCP_ENDPOINT_SESSION_IDLE_S": str(SESSION_IDLE_S),
    }
    processes = [_start_worker(env) for _ in range(WORKERS)]
    ports = []
    try:
        for _ in range(APIS):
            port, proc = _start_api(env)
            ports.append(port)
            processes.append(proc)
        yield Cluster(own, ports, processes, env)
    finally:
        for proc in processes:
            proc.terminate()
        for proc in processes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@dataclass
class World:
    mcp_path: str
    other_mcp_path: str  # another server of the same team
    member: str
    gateway: str  # its name

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.member}"}


@pytest.fixture(scope="module")
async def world(cluster: Cluster, backends: Backends) -> AsyncIterator[World]:
    """A team, a gateway, a virtual server and a member token, each made on one API or the other."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(headers=admin, timeout=60) as http:
        team = (await http.post(f"{cluster.base(0)}/v1/teams", json={"name": unique("replicas")})).json()
        gateway = await http.post(
            f"{cluster.base(1)}/v1/gateways",
            json={"name": unique(), "url": backends.urls["stateful"], "team": team["id"]},
        )
        assert gateway.status_code == 201, gateway.text
        name = gateway.json()["name"]
        server = await http.post(
            f"{cluster.base(0)}/v1/servers",
            json={
                "name": "replicated",
                "team": team["id"],
                "tools": [f"{name}.echo", f"{name}.delayed_echo"],
            },
        )
        assert server.status_code == 201, server.text
        other = await http.post(
            f"{cluster.base(1)}/v1/servers",
            json={"name": "other", "team": team["id"], "tools": [f"{name}.echo"]},
        )
        assert other.status_code == 201, other.text
        token = await http.post(
            f"{cluster.base(1)}/v1/tokens", json={"name": "member", "team": team["id"], "role": "member"}
        )
        assert token.status_code == 201, token.text
        yield World(
            mcp_path=server.json()["mcp_path"],
            other_mcp_path=other.json()["mcp_path"],
            member=token.json()["token"],
            gateway=name,
        )
        await http.delete(f"{cluster.base(0)}/v1/teams/{team['id']}")


class Router(httpx2.AsyncBaseTransport):
    """Sends each request of one client to the API the test chose (`target`); the GET stream
    always to `stream_api`, and the client's answers to server-to-client requests (JSON-RPC
    responses) to `answers` if set. Records where every request went."""

    def __init__(self, ports: list[int], stream_api: int, answers: int | None = None) -> None:
        self.ports, self.stream_api, self.answers = ports, stream_api, answers
        self.target = 0
        self.inner = httpx2.AsyncHTTPTransport()
        self.sent: list[tuple[str, str, int, int]] = []  # HTTP method, JSON-RPC method, API, status
        self.stream_open = asyncio.Event()
        self.session_id: str | None = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content) if request.method == "POST" else {}
        rpc = body.get("method", "")
        if request.method == "GET":
            api = self.stream_api
        elif self.answers is not None and ("result" in body or "error" in body):
            api = self.answers
        else:
            api = self.target
        port = self.ports[api]
        request.url = request.url.copy_with(port=port)
        request.headers["Host"] = f"127.0.0.1:{port}"
        response = await self.inner.handle_async_request(request)
        self.sent.append((request.method, rpc, api, response.status_code))
        self.session_id = response.headers.get("mcp-session-id", self.session_id)
        if request.method == "GET" and response.status_code == 200:
            self.stream_open.set()
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class TaskStatusWatch(ClientExtension):
    """Lets the SDK client observe `notifications/tasks/status` (a 2025-11-25 notification its
    core tables leave out) by binding it, as an extension would."""

    identifier = "test.mcpq/task-status"

    def __init__(self) -> None:
        self.received: asyncio.Queue[types.TaskStatusNotificationParams] = asyncio.Queue()

    def notifications(self) -> list[NotificationBinding[Any]]:
        return [
            NotificationBinding(
                method="notifications/tasks/status",
                params_type=types.TaskStatusNotificationParams,
                handler=self._on_status,
            )
        ]

    async def _on_status(self, params: types.TaskStatusNotificationParams) -> None:
        await self.received.put(params)


async def _raw(
    url: str, world: World, session_id: str, method: str, params: dict[str, Any]
) -> dict[str, Any]:
    """One JSON-RPC request on an existing 2025-11-25 session; its response from the SSE body."""
    headers = {**ACCEPT, **world.auth(), "Mcp-Session-Id": session_id, "MCP-Protocol-Version": "2025-11-25"}
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, headers=headers
        )
    assert response.status_code == 200, response.text
    data = [line[5:] for line in response.text.splitlines() if line.startswith("data:") and line[5:].strip()]
    message: dict[str, Any] = json.loads(data[-1])
    return message


async def test_one_session_served_by_both_apis(cluster: Cluster, world: World) -> None:
    """initialize on API 1; tools/list and tools/call on API 2; a task made on API 1 and read on
    API 2; the GET stream on API 2 gets the task's status from API 1; DELETE on API 1 ends the
    session on API 2 as well."""
    router = Router(cluster.ports, stream_api=1)
    watch = TaskStatusWatch()
    url = f"{cluster.base(0)}{world.mcp_path}"
    async with httpx2.AsyncClient(
        transport=router, headers=world.auth(), timeout=httpx2.Timeout(30, read=None)
    ) as http:
        async with Client(
            streamable_http_client(url, http_client=http),  # type: ignore[arg-type]
            mode="legacy",
            extensions=[watch],
        ) as mcp:
            assert mcp.protocol_version == "2025-11-25"
            await asyncio.wait_for(router.stream_open.wait(), 10)  # the GET stream, on API 2

            router.target = 1
            tools = (await mcp.list_tools()).tools
            assert [t.name for t in tools] == ["echo", "delayed_echo"]
            text = uuid.uuid4().hex
            echoed = await mcp.call_tool("echo", {"text": text})
            assert echoed.is_error is False and echoed.content[0].text == text  # type: ignore[union-attr]

            # The SDK client reads every tools/call result as a CallToolResult, so the
            # task-augmented call goes raw, on the same session, to API 1.
            assert router.session_id is not None
            created = await _raw(
                cluster.base(0) + world.mcp_path,
                world,
                router.session_id,
                "tools/call",
                {"name": "delayed_echo", "arguments": {"text": text, "seconds": 1}, "task": {"ttl": 60_000}},
            )
            task_id = created["result"]["task"]["taskId"]
            assert created["result"]["task"]["status"] == "working"

            router.target = 1
            seen = await mcp.session.send_request(
                types.GetTaskRequest(params=types.GetTaskRequestParams(task_id=task_id)), types.GetTaskResult
            )
            assert seen.task_id == task_id and seen.status in ("working", "completed")
            # Sent by API 1 (which took the call) on the stream API 2 holds, through Redis.
            status = await asyncio.wait_for(watch.received.get(), 30)
            assert (status.task_id, status.status) == (task_id, "completed")

            # Longer than the idle period: API 1's copy of the session has idled out; the open
            # GET stream on API 2 kept the shared state alive, so API 1 adopts the session again.
            await asyncio.sleep(SESSION_IDLE_S + 1)
            router.target = 0
            done = await mcp.session.send_request(
                types.GetTaskRequest(params=types.GetTaskRequestParams(task_id=task_id)), types.GetTaskResult
            )
            assert done.status == "completed"
            # leaving the client sends DELETE, to API 1

    session_id = router.session_id
    assert session_id is not None
    sent = {(method, rpc, api) for method, rpc, api, status in router.sent if status < 400}
    assert ("POST", "initialize", 0) in sent
    assert {("POST", "tools/list", 1), ("POST", "tools/call", 1)} <= sent
    assert {("POST", "tasks/get", 1), ("POST", "tasks/get", 0), ("GET", "", 1), ("DELETE", "", 0)} <= sent

    async with httpx.AsyncClient(timeout=30) as http:
        gone = await http.post(
            f"{cluster.base(1)}{world.mcp_path}",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={
                **ACCEPT,
                **world.auth(),
                "Mcp-Session-Id": session_id,
                "MCP-Protocol-Version": "2025-11-25",
            },
        )
    assert gone.status_code == 404, gone.text
    cluster.check_alive()


async def _open_raw(http: httpx.AsyncClient, url: str, version: str) -> dict[str, str]:
    """`initialize` by hand; the headers that name the session on later requests."""
    init = await http.post(
        url,
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        },
    )
    assert init.status_code == 200 and version in init.text, init.text
    return {"Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": version}


async def test_2025_06_18_session_delete_closes_the_stream_elsewhere(cluster: Cluster, world: World) -> None:
    """Raw JSON-RPC at 2025-06-18: initialize on API 2, the GET stream on API 1, a call on API 2;
    DELETE on API 2 closes the stream API 1 holds, and API 1 then answers 404."""
    version = "2025-06-18"
    mcp = [f"{cluster.base(api)}{world.mcp_path}" for api in range(APIS)]
    async with httpx.AsyncClient(headers={**ACCEPT, **world.auth()}, timeout=30) as http:
        session = await _open_raw(http, mcp[1], version)
        initialized = await http.post(
            mcp[0], json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session
        )
        assert initialized.status_code == 202, initialized.text

        async with http.stream("GET", mcp[0], headers={**session, "Accept": "text/event-stream"}) as stream:
            assert stream.status_code == 200
            call = await http.post(
                mcp[1],
                json={
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": "06-18"}},
                },
                headers=session,
            )
            assert call.status_code == 200 and '"text":"06-18"' in call.text.replace(" ", ""), call.text
            deleted = await http.delete(mcp[1], headers=session)
            assert deleted.status_code == 200, deleted.text

            async def drain() -> None:
                async for _ in stream.aiter_bytes():
                    pass

            await asyncio.wait_for(drain(), 10)  # API 1 closed the stream it held

        gone = await http.post(
            mcp[0], json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, headers=session
        )
        assert gone.status_code == 404, gone.text
    cluster.check_alive()


async def test_a_session_belongs_to_its_server(cluster: Cluster, world: World) -> None:
    """A session id is unknown on another server's endpoint, on the replica that holds the
    session and on the one that would adopt it."""
    list_tools = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    async with httpx.AsyncClient(headers={**ACCEPT, **world.auth()}, timeout=30) as http:
        session = await _open_raw(http, f"{cluster.base(0)}{world.mcp_path}", "2025-11-25")
        for api in range(APIS):
            elsewhere = await http.post(
                f"{cluster.base(api)}{world.other_mcp_path}", json=list_tools, headers=session
            )
            assert elsewhere.status_code == 404, elsewhere.text
        listed = await http.post(f"{cluster.base(1)}{world.mcp_path}", json=list_tools, headers=session)
        assert listed.status_code == 200 and '"echo"' in listed.text, listed.text


async def test_state_gone_from_redis_closes_every_copy(cluster: Cluster, world: World) -> None:
    """When a session's state leaves Redis (expired, or removed by hand as here), the replicas'
    sweeps close their copies: the GET stream API 2 holds ends, and API 1 answers 404."""
    mcp = [f"{cluster.base(api)}{world.mcp_path}" for api in range(APIS)]
    redis = Redis.from_url(cluster.settings.redis_url)
    async with httpx.AsyncClient(headers={**ACCEPT, **world.auth()}, timeout=30) as http:
        session = await _open_raw(http, mcp[0], "2025-11-25")
        key = cluster.settings.key("mcp", "session", session["Mcp-Session-Id"])
        async with http.stream("GET", mcp[1], headers={**session, "Accept": "text/event-stream"}) as stream:
            assert stream.status_code == 200
            assert await redis.delete(key) == 1

            async def drain() -> None:
                async for _ in stream.aiter_bytes():
                    pass

            await asyncio.wait_for(drain(), SESSION_IDLE_S)
        # API 1's copy closes at its own next sweep (every SESSION_IDLE_S / 3).
        deadline = time.monotonic() + SESSION_IDLE_S
        while True:
            answer = await http.post(
                mcp[0], json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=session
            )
            if answer.status_code == 404 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert answer.status_code == 404, answer.text
    await redis.aclose()


async def test_200_concurrent_rest_calls_over_both_apis(cluster: Cluster, world: World) -> None:
    async with httpx.AsyncClient(headers=world.auth(), timeout=120) as http:

        async def call(i: int) -> tuple[str, int, httpx.Response]:
            text = f"caller-{i}-{uuid.uuid4().hex}"
            api = i % APIS
            response = await http.post(
                f"{cluster.base(api)}/v1/tools/{world.gateway}.delayed_echo/call",
                json={"arguments": {"text": text, "seconds": 0.2}, "timeout_s": 60},
            )
            return text, api, response

        results = await asyncio.gather(*(call(i) for i in range(CALLS)))
        workers: set[str] = set()
        for text, api, response in results:
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["result"]["structuredContent"] == {"result": text}
            # Any API reads any job: each job is looked up on the API that did not take the call.
            job = await http.get(f"{cluster.base(1 - api)}/v1/jobs/{response.json()['job_id']}")
            assert job.status_code == 200 and job.json()["status"] == "completed", job.text
            workers.add(job.json()["worker"])
    assert len(workers) == WORKERS, workers
    cluster.check_alive()


@pytest.mark.filterwarnings("ignore:The logging capability is deprecated")
async def test_a_log_level_set_on_one_api_holds_on_the_other(cluster: Cluster, world: World) -> None:
    """API 2 already holds a copy of the session when API 1 takes `logging/setLevel`: the next
    call, on API 2, relays the backend's logs at that level (the copy heard the change)."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(headers=admin, timeout=60) as http:
        team = (await http.get(f"{cluster.base(0)}/v1/servers")).json()
        team_id = next(s["team_id"] for s in team["items"] if s["mcp_path"] == world.mcp_path)
        server = await http.post(
            f"{cluster.base(0)}/v1/servers",
            json={"name": unique("levels"), "team": team_id, "tools": [f"{world.gateway}.levels"]},
        )
        assert server.status_code == 201, server.text
    logs: list[tuple[str, Any]] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append((params.level, params.data))

    router = Router(cluster.ports, stream_api=1)
    url = f"{cluster.base(0)}{server.json()['mcp_path']}"
    async with (
        httpx2.AsyncClient(
            transport=router, headers=world.auth(), timeout=httpx2.Timeout(30, read=None)
        ) as http2,
        Client(
            streamable_http_client(url, http_client=http2),  # type: ignore[arg-type]
            mode="legacy",
            logging_callback=on_log,
        ) as mcp,
    ):
        router.target = 1
        await mcp.call_tool("levels", {})  # API 2 adopts the session; no level yet: no logs
        assert logs == []
        router.target = 0
        await mcp.set_logging_level("error")
        router.target = 1
        await mcp.call_tool("levels", {})
    assert logs == [("error", "error entry"), ("critical", "critical entry")]
    sent = {(rpc, api) for _, rpc, api, status in router.sent if status < 400}
    assert {("tools/call", 1), ("logging/setLevel", 0)} <= sent


@dataclass
class Watched:
    """A team with one server per backend era: its resource `test://watched-resource` and tool `touch`."""

    paths: dict[str, str]  # backend kind -> the server's MCP path
    member: str

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.member}"}


@pytest.fixture(scope="module")
async def watched(cluster: Cluster, backends: Backends) -> AsyncIterator[Watched]:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    paths: dict[str, str] = {}
    async with httpx.AsyncClient(headers=admin, timeout=60) as http:
        team = (await http.post(f"{cluster.base(0)}/v1/teams", json={"name": unique("watched")})).json()
        # `stateful` speaks 2026-07-28 (the worker listens), `handshake` 2025-11-25 (it subscribes).
        for kind in ("stateful", "handshake"):
            gateway = await http.post(
                f"{cluster.base(0)}/v1/gateways",
                json={"name": unique(), "url": backends.urls[kind], "team": team["id"]},
            )
            assert gateway.status_code == 201, gateway.text
            name = gateway.json()["name"]
            server = await http.post(
                f"{cluster.base(1)}/v1/servers",
                json={
                    "name": f"watched-{kind}",
                    "team": team["id"],
                    "tools": [f"{name}.touch"],
                    "resources": [f"{name}:test://watched-resource"],
                },
            )
            assert server.status_code == 201, server.text
            paths[kind] = server.json()["mcp_path"]
        token = await http.post(
            f"{cluster.base(0)}/v1/tokens", json={"name": "member", "team": team["id"], "role": "member"}
        )
        yield Watched(paths, token.json()["token"])
        await http.delete(f"{cluster.base(0)}/v1/teams/{team['id']}")


class Inbox:
    """The `notifications/resources/updated` and `*/list_changed` a client receives."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[str] = asyncio.Queue()

    async def __call__(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            await self.received.put(f"updated {message.params.uri}")
        elif isinstance(message, types.ToolListChangedNotification | types.ResourceListChangedNotification):
            await self.received.put(message.method)

    async def next(self) -> str:
        return await asyncio.wait_for(self.received.get(), 20)


async def subscribe(client: Client, uri: str, *, unsubscribe: bool = False) -> None:
    """resources/subscribe or unsubscribe (the SDK's helpers warn: 2026-07-28 removed them)."""
    request: types.SubscribeRequest | types.UnsubscribeRequest = (
        types.UnsubscribeRequest(params=types.UnsubscribeRequestParams(uri=uri))
        if unsubscribe
        else types.SubscribeRequest(params=types.SubscribeRequestParams(uri=uri))
    )
    await client.session.send_request(request, types.EmptyResult)


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait up to 40 s for `check` to hold (it watches another process, which pushes nothing)."""
    deadline = time.monotonic() + 40
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("kind", ["handshake", "stateful"])
async def test_resource_update_reaches_the_stream_another_api_holds(
    cluster: Cluster, watched: Watched, backends: Backends, kind: str
) -> None:
    """Client A subscribes on API 1, which creates the subscription (a worker then holds it on the
    backend); A's GET stream is on API 2, and the backend's update reaches it there. Client B
    (all on API 2) subscribes too and gets the same update. A unsubscribes: B still gets updates,
    A does not. B's session ends: the last client gone, the backend subscription is dropped."""
    uri = "test://watched-resource"
    url = f"{cluster.base(0)}{watched.paths[kind]}"
    inbox_a, inbox_b = Inbox(), Inbox()
    router_a, router_b = Router(cluster.ports, stream_api=1), Router(cluster.ports, stream_api=1)
    router_b.target = 1
    subscribed_before = backends.watched.subscribed.count(uri)
    unsubscribed_before = backends.watched.unsubscribed.count(uri)
    timeout = httpx2.Timeout(30, read=None)
    async with (
        httpx2.AsyncClient(transport=router_a, headers=watched.auth(), timeout=timeout) as http_a,
        httpx2.AsyncClient(transport=router_b, headers=watched.auth(), timeout=timeout) as http_b,
        Client(
            streamable_http_client(url, http_client=http_a),  # type: ignore[arg-type]
            mode="legacy",
            message_handler=inbox_a,
        ) as a,
    ):
        caps = a.server_capabilities
        assert caps.resources is not None and caps.resources.subscribe and caps.resources.list_changed
        await asyncio.wait_for(router_a.stream_open.wait(), 10)
        await subscribe(a, uri)
        assert ("POST", "resources/subscribe", 0, 200) in router_a.sent

        touched = await a.call_tool("touch", {"uri": uri})
        assert touched.is_error is False
        assert await inbox_a.next() == f"updated {uri}"

        async with Client(
            streamable_http_client(url, http_client=http_b),  # type: ignore[arg-type]
            mode="legacy",
            message_handler=inbox_b,
        ) as b:
            await asyncio.wait_for(router_b.stream_open.wait(), 10)
            await subscribe(b, uri)
            await b.call_tool("touch", {"uri": uri})
            assert await inbox_a.next() == f"updated {uri}"
            assert await inbox_b.next() == f"updated {uri}"
            # One backend subscription for both clients.
            assert backends.watched.subscribed.count(uri) == subscribed_before + (kind == "handshake")

            await subscribe(a, uri, unsubscribe=True)
            await b.call_tool("touch", {"uri": uri})
            assert await inbox_b.next() == f"updated {uri}"
            assert inbox_a.received.empty()
        # B's session ended (DELETE): no client is left, so the worker drops the backend subscription.
        redis = Redis.from_url(cluster.settings.redis_url)
        wanted_key = cluster.settings.key("subs", "wanted")

        async def dropped() -> bool:
            unsubscribed = backends.watched.unsubscribed.count(uri) > unsubscribed_before
            left: int = await redis.hlen(wanted_key)  # type: ignore[misc]
            return left == 0 and (unsubscribed or kind != "handshake")

        try:
            await eventually(dropped)
        finally:
            await redis.aclose()
    cluster.check_alive()


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
async def test_another_worker_takes_the_subscription_over(
    cluster: Cluster, watched: Watched, backends: Backends, how: signal.Signals
) -> None:
    """The worker holding a backend subscription dies (SIGKILL: taken over once its beat lapses)
    or stops (SIGTERM: it lets go at once): the other worker subscribes on the backend again, and
    the next update still reaches the client. A new worker then takes the dead one's place."""
    uri = "test://watched-resource"
    inbox = Inbox()
    redis = Redis.from_url(cluster.settings.redis_url)
    holders_key = cluster.settings.key("subs", "holder")
    router = Router(cluster.ports, stream_api=1)
    async with (
        httpx2.AsyncClient(
            transport=router, headers=watched.auth(), timeout=httpx2.Timeout(30, read=None)
        ) as http,
        Client(
            streamable_http_client(f"{cluster.base(0)}{watched.paths['handshake']}", http_client=http),  # type: ignore[arg-type]
            mode="legacy",
            message_handler=inbox,
        ) as mcp,
    ):
        await asyncio.wait_for(router.stream_open.wait(), 10)
        await subscribe(mcp, uri)
        holders: dict[bytes, bytes] = await redis.hgetall(holders_key)  # type: ignore[misc]
        assert len(holders) == 1, holders
        (holder,) = holders.values()
        pid = int(holder.decode().split(":")[1])
        (victim,) = [p for p in cluster.processes if p.pid == pid]
        subscribed = backends.watched.subscribed.count(uri)
        victim.send_signal(how)
        await asyncio.to_thread(victim.wait, 30)
        cluster.processes.remove(victim)
        cluster.processes.append(_start_worker(cluster.env))

        async def taken_over() -> bool:
            now: dict[bytes, bytes] = await redis.hgetall(holders_key)  # type: ignore[misc]
            return backends.watched.subscribed.count(uri) > subscribed and list(now.values()) not in (
                [],
                [holder],
            )

        await eventually(taken_over)
        await mcp.call_tool("touch", {"uri": uri})
        assert await inbox.next() == f"updated {uri}"
        await subscribe(mcp, uri, unsubscribe=True)
    await redis.aclose()
    cluster.check_alive()


async def test_list_changed_reaches_the_stream_another_api_holds(cluster: Cluster, watched: Watched) -> None:
    """A membership edit on API 1 reaches the client whose GET stream API 2 holds."""
    inbox = Inbox()
    router = Router(cluster.ports, stream_api=1)
    path = watched.paths["handshake"]
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with (
        httpx2.AsyncClient(
            transport=router, headers=watched.auth(), timeout=httpx2.Timeout(30, read=None)
        ) as http,
        Client(
            streamable_http_client(f"{cluster.base(0)}{path}", http_client=http),  # type: ignore[arg-type]
            mode="legacy",
            message_handler=inbox,
        ) as mcp,
        httpx.AsyncClient(headers=admin, timeout=30) as rest,
    ):
        await asyncio.wait_for(router.stream_open.wait(), 10)
        server_id = path.split("/")[3]
        edit = await rest.patch(f"{cluster.base(0)}/v1/servers/{server_id}", json={"tools": []})
        assert edit.status_code == 200, edit.text
        assert await inbox.next() == "notifications/tools/list_changed"
        assert (await mcp.list_tools()).tools == []
    cluster.check_alive()


@dataclass
class Asking:
    """A team with a server whose tool `test_elicitation` (the conformance fixture backend's)
    asks the caller a question before it answers."""

    path: str
    member: str

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.member}"}


@pytest.fixture(scope="module")
async def asking(cluster: Cluster, fixture_backend: FixtureBackend) -> AsyncIterator[Asking]:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(headers=admin, timeout=60) as http:
        team = (await http.post(f"{cluster.base(0)}/v1/teams", json={"name": unique("asking")})).json()
        gateway = await http.post(
            f"{cluster.base(1)}/v1/gateways",
            json={"name": unique(), "url": fixture_backend.url, "team": team["id"]},
        )
        assert gateway.status_code == 201, gateway.text
        server = await http.post(
            f"{cluster.base(0)}/v1/servers",
            json={
                "name": "asking",
                "team": team["id"],
                "tools": [f"{gateway.json()['name']}.test_elicitation"],
            },
        )
        assert server.status_code == 201, server.text
        token = await http.post(
            f"{cluster.base(1)}/v1/tokens", json={"name": "member", "team": team["id"], "role": "member"}
        )
        try:
            yield Asking(server.json()["mcp_path"], token.json()["token"])
        finally:
            await http.delete(f"{cluster.base(0)}/v1/teams/{team['id']}")


def _answer(message: str) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"username": message, "email": "e@example.com"})


def _answered(result: types.CallToolResult, message: str) -> bool:
    expected = f'User response: action=accept, content={{"username": "{message}", "email": "e@example.com"}}'
    text = result.content[0]
    return result.is_error is False and isinstance(text, types.TextContent) and text.text == expected


@contextlib.asynccontextmanager
async def _asking_client(
    cluster: Cluster, asking: Asking, router: Router, elicitation_callback: Any
) -> AsyncIterator[Client]:
    """A 2025-11-25 SDK client (it declares elicitation) whose requests go through `router`."""
    async with (
        httpx2.AsyncClient(
            transport=router, headers=asking.auth(), timeout=httpx2.Timeout(30, read=None)
        ) as http,
        Client(
            streamable_http_client(f"{cluster.base(0)}{asking.path}", http_client=http),  # type: ignore[arg-type]
            mode="legacy",
            elicitation_callback=elicitation_callback,
        ) as mcp,
    ):
        assert mcp.protocol_version == "2025-11-25"
        yield mcp


async def test_an_answer_posted_to_the_other_api_reaches_the_question(
    cluster: Cluster, asking: Asking
) -> None:
    """The call goes to API 1, which asks the backend's question on the call's stream; the
    client's answer is POSTed to API 2, which hands it to API 1: the call completes with it."""
    router = Router(cluster.ports, stream_api=0, answers=1)

    async def answer(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        return _answer(params.message)

    async with _asking_client(cluster, asking, router, answer) as mcp:
        result = await asyncio.wait_for(mcp.call_tool("test_elicitation", {"message": "who?"}), 30)
    assert _answered(result, "who?"), result
    assert ("POST", "tools/call", 0, 200) in router.sent
    assert ("POST", "", 1, 202) in router.sent, router.sent  # the answer, on API 2
    assert not any(api == 0 and rpc == "" and method == "POST" for method, rpc, api, _ in router.sent)
    cluster.check_alive()


async def test_questions_from_both_apis_at_once_get_their_own_answers(
    cluster: Cluster, asking: Asking
) -> None:
    """One session, two calls at once, one on each API, each asking a question; both questions
    are out together and both answers go to API 2. The two replicas' requests have distinct ids,
    so each call gets its own answer (API 1's handed over, API 2's taken there)."""
    router = Router(cluster.ports, stream_api=0, answers=1)
    ids: list[types.RequestId] = []
    first_asked, both_asked = asyncio.Event(), asyncio.Event()

    async def answer_once_both_asked(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        ids.append(context.request_id)
        (first_asked if len(ids) == 1 else both_asked).set()
        await asyncio.wait_for(both_asked.wait(), 20)
        return _answer(params.message)

    async with _asking_client(cluster, asking, router, answer_once_both_asked) as mcp:
        first = asyncio.create_task(mcp.call_tool("test_elicitation", {"message": "first"}))
        await asyncio.wait_for(first_asked.wait(), 20)  # asked by API 1
        router.target = 1
        second = asyncio.create_task(mcp.call_tool("test_elicitation", {"message": "second"}))
        results = await asyncio.wait_for(asyncio.gather(first, second), 40)
    assert _answered(results[0], "first") and _answered(results[1], "second"), results
    assert len(set(ids)) == 2, ids
    assert {("tools/call", 0), ("tools/call", 1)} <= {(rpc, api) for _, rpc, api, _ in router.sent}
    cluster.check_alive()


async def test_an_answer_nobody_awaits_is_dropped(cluster: Cluster, asking: Asking) -> None:
    """A late second answer to a question already answered, an answer in the shape of another
    replica's request, and one to an id no replica uses: each API accepts them (202) and drops
    them, and the session goes on."""
    router = Router(cluster.ports, stream_api=0, answers=1)
    asked: list[types.RequestId] = []

    async def answer(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(context.request_id)
        return _answer(params.message)

    async with _asking_client(cluster, asking, router, answer) as mcp:
        assert _answered(await mcp.call_tool("test_elicitation", {"message": "once"}), "once")
        assert router.session_id is not None
        headers = {
            **ACCEPT,
            **asking.auth(),
            "Mcp-Session-Id": router.session_id,
            "MCP-Protocol-Version": "2025-11-25",
        }
        late = {"id": asked[0], "result": _answer("late").model_dump(mode="json", exclude_none=True)}
        stray: list[dict[str, Any]] = [
            late,
            {"id": "r0123456789ab-1", "result": {"action": "decline"}},
            {"id": "r0123456789ab-2", "error": {"code": -32603, "message": "no"}},
            {"id": 424242, "result": {"action": "cancel"}},
        ]
        async with httpx.AsyncClient(timeout=30) as http:
            for api in range(APIS):
                for message in stray:
                    posted = await http.post(
                        f"{cluster.base(api)}{asking.path}",
                        json={"jsonrpc": "2.0", **message},
                        headers=headers,
                    )
                    assert posted.status_code == 202, posted.text
        router.target = 1
        assert _answered(await mcp.call_tool("test_elicitation", {"message": "again"}), "again")
    cluster.check_alive()
