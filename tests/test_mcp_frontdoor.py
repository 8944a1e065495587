"""The MCP front door, /v1/servers/{id}/mcp, driven by the official SDK `Client` and by raw
JSON-RPC over HTTP, against the API served by uvicorn on loopback (SSE needs a real socket)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import httpx2
import mcp_types
import pytest
from arq.worker import Worker
from fastapi import FastAPI
from mcp import Client, MCPError
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.streamable_http import streamable_http_client
from pydantic import TypeAdapter

from tests.backends import LOGO_BYTES, Backends
from tests.conftest import unique
from tests.jobs_helpers import store_of
from tests.test_invariant import _assert_nothing_held


@dataclass
class World:
    url: str  # the server's MCP endpoint
    server: dict[str, Any]
    gateways: tuple[dict[str, Any], dict[str, Any]]
    member: str  # a member token of the server's team
    viewer: str


@pytest.fixture(scope="module")
async def world(
    client: httpx.AsyncClient, backends: Backends, worker: Worker, api_url: str
) -> AsyncIterator[World]:
    team = (await client.post("/v1/teams", json={"name": unique("mcp")})).json()
    made = []
    for kind in ("stateful", "stateless"):
        response = await client.post(
            "/v1/gateways", json={"name": unique(), "url": backends.urls[kind], "team": team["id"]}
        )
        assert response.status_code == 201, response.text
        made.append(response.json())
    a, b = made[0]["name"], made[1]["name"]
    created = await client.post(
        "/v1/servers",
        json={
            "name": "front",
            "team": team["id"],
            "tools": [f"{a}.echo", f"{a}.sleep", f"{a}.hold", f"{b}.add", f"{a}.test_error_handling"],
            "resources": [f"{a}:demo://readme", f"{a}:demo://items/{{item}}", f"{b}:demo://logo.png"],
            "prompts": [f"{b}.greet"],
        },
    )
    assert created.status_code == 201, created.text
    server = created.json()
    tokens = {}
    for role in ("member", "viewer"):
        minted = await client.post("/v1/tokens", json={"name": role, "team": team["id"], "role": role})
        tokens[role] = minted.json()["token"]
    yield World(
        url=f"{api_url}{server['mcp_path']}",
        server=server,
        gateways=(made[0], made[1]),
        member=tokens["member"],
        viewer=tokens["viewer"],
    )
    await client.delete(f"/v1/teams/{team['id']}")


@contextlib.asynccontextmanager
async def mcp_client(url: str, token: str | None, mode: str = "legacy") -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=None)) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as mcp,  # type: ignore[arg-type]
    ):
        yield mcp


# --- the SDK client ------------------------------------------------------------------------------


async def test_lists_come_from_the_catalog(world: World) -> None:
    async with mcp_client(world.url, world.member) as mcp:
        assert mcp.protocol_version == "2025-11-25"
        tools = (await mcp.list_tools()).tools
        assert [t.name for t in tools] == ["echo", "sleep", "hold", "add", "test_error_handling"]
        assert tools[3].input_schema["required"] == ["a", "b"]
        resources = (await mcp.list_resources()).resources
        assert sorted(str(r.uri) for r in resources) == ["demo://logo.png", "demo://readme"]
        templates = (await mcp.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["demo://items/{item}"]
        prompts = (await mcp.list_prompts()).prompts
        assert [p.name for p in prompts] == ["greet"]
        assert mcp.server_capabilities.tasks is not None


async def test_call_read_render(world: World, app: FastAPI) -> None:
    async with mcp_client(world.url, world.member) as mcp:
        added = await mcp.call_tool("add", {"a": 2, "b": 3})  # from the second gateway
        assert added.is_error is False
        assert added.content[0].text == "5"  # type: ignore[union-attr]
        readme = await mcp.read_resource("demo://readme")
        assert readme.contents[0].text == "hello from a resource"  # type: ignore[union-attr]
        logo = await mcp.read_resource("demo://logo.png")
        assert base64.b64decode(logo.contents[0].blob) == LOGO_BYTES  # type: ignore[union-attr]
        item = await mcp.read_resource("demo://items/7")
        assert item.contents[0].text == "item 7"  # type: ignore[union-attr]
        prompt = await mcp.get_prompt("greet", {"name": "Ada"})
        assert prompt.messages[0].content.text == "Hello Ada"  # type: ignore[union-attr]


async def test_errors(world: World) -> None:
    async with mcp_client(world.url, world.member) as mcp:
        failed = await mcp.call_tool("test_error_handling", {})
        assert failed.is_error is True
        assert "intentionally" in failed.content[0].text  # type: ignore[union-attr]
        bad_args = await mcp.call_tool("add", {"a": "x"})
        assert bad_args.is_error is True
        with pytest.raises(MCPError) as unknown:
            await mcp.call_tool("nope", {})
        assert unknown.value.code == -32602
        with pytest.raises(MCPError) as missing:
            await mcp.read_resource("demo://missing")
        assert missing.value.code == -32002
        with pytest.raises(MCPError) as no_name:
            await mcp.get_prompt("greet", {})
        assert no_name.value.code == -32602


async def test_viewer_lists_but_may_not_call(world: World) -> None:
    async with mcp_client(world.url, world.viewer) as mcp:
        assert len((await mcp.list_tools()).tools) == 5
        with pytest.raises(MCPError):
            await mcp.call_tool("echo", {"text": "x"})


async def test_progress_reaches_the_client(world: World) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with mcp_client(world.url, world.member) as mcp:
        result = await mcp.call_tool("sleep", {"seconds": 1.0}, progress_callback=on_progress)
    assert result.content[0].text == "slept 1.0"  # type: ignore[union-attr]
    assert len(seen) >= 2, seen
    assert all(total == 10 for _, total, _ in seen)
    assert [p for p, _, _ in seen] == sorted(p for p, _, _ in seen)


async def test_cancel_cancels_the_job(world: World, backends: Backends, app: FastAPI) -> None:
    key = uuid.uuid4().hex
    gate = backends.gate(key)
    store = store_of(app)
    async with mcp_client(world.url, world.member) as mcp:
        call = asyncio.create_task(mcp.call_tool("hold", {"key": key}))
        assert await asyncio.to_thread(gate.entered.wait, 10)
        job_id = await _running_job(app, "hold")
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        for _ in range(100):
            record = await store.get(job_id)
            if record.status.terminal:
                break
            await asyncio.sleep(0.05)
    assert record.status.value == "cancelled", record


async def _running_job(app: FastAPI, tool: str) -> str:
    store = store_of(app)
    redis = app.state.ctx.queue.redis
    for _ in range(100):
        for key in await redis.keys(store._key("*")):
            record = await store.get(key.decode().rsplit(":", 1)[1])
            if (
                record
                and record.status.value == "running"
                and record.item
                and record.item.endswith(f".{tool}")
            ):
                return record.id
        await asyncio.sleep(0.05)
    raise AssertionError(f"no running {tool} job")


async def test_no_connection_held_while_an_mcp_call_is_blocked(
    world: World, backends: Backends, app: FastAPI, database_url: str
) -> None:
    key = uuid.uuid4().hex
    gate = backends.gate(key)
    async with mcp_client(world.url, world.member) as mcp:
        call = asyncio.create_task(mcp.call_tool("hold", {"key": key}))
        assert await asyncio.to_thread(gate.entered.wait, 10)
        await _assert_nothing_held(app, database_url)
        gate.release()
        result = await call
    assert result.content[0].text == f"released {key}"  # type: ignore[union-attr]


async def test_modern_protocol(world: World) -> None:
    """The SDK's default mode probes server/discover and speaks 2026-07-28."""
    async with mcp_client(world.url, world.member, mode="auto") as mcp:
        assert mcp.protocol_version == "2026-07-28"
        assert "add" in {t.name for t in (await mcp.list_tools()).tools}
        added = await mcp.call_tool("add", {"a": 1, "b": 1})
        assert added.content[0].text == "2"  # type: ignore[union-attr]


# --- HTTP edges: auth, public_mcp, DNS rebinding --------------------------------------------------


INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def test_auth_and_not_found(world: World, client: httpx.AsyncClient, api_url: str) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        anonymous = await http.post(world.url, json=INIT, headers=ACCEPT)
        assert anonymous.status_code == 401
        assert anonymous.json()["error"] == "unauthorized"
        bad = await http.post(world.url, json=INIT, headers={**ACCEPT, "Authorization": "Bearer mcpq_nope"})
        assert bad.status_code == 401
        for missing in ("nope", str(uuid.uuid4())):
            response = await http.post(
                f"{api_url}/v1/servers/{missing}/mcp", json=INIT, headers={**ACCEPT, **_auth(world.member)}
            )
            assert response.status_code == 404
        # another team's token: the server is not there for it
        other = (await client.post("/v1/teams", json={"name": unique("other")})).json()
        token = (
            await client.post("/v1/tokens", json={"name": "o", "team": other["id"], "role": "admin"})
        ).json()
        response = await http.post(world.url, json=INIT, headers={**ACCEPT, **_auth(token["token"])})
        assert response.status_code == 404
        await client.delete(f"/v1/teams/{other['id']}")


async def test_public_mcp_opens_to_anonymous_clients(world: World, client: httpx.AsyncClient) -> None:
    server_id = world.server["id"]
    assert (await client.patch(f"/v1/servers/{server_id}", json={"public_mcp": True})).status_code == 200
    try:
        async with mcp_client(world.url, None) as mcp:
            assert (await mcp.call_tool("echo", {"text": "anon"})).content[0].text == "anon"  # type: ignore[union-attr]
    finally:
        await client.patch(f"/v1/servers/{server_id}", json={"public_mcp": False})
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.post(world.url, json=INIT, headers=ACCEPT)).status_code == 401


async def test_dns_rebinding_protection(world: World) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        headers = {**ACCEPT, **_auth(world.member)}
        evil_host = await http.post(world.url, json=INIT, headers={**headers, "Host": "evil.example.com"})
        assert 400 <= evil_host.status_code < 500
        evil_origin = await http.post(
            world.url, json=INIT, headers={**headers, "Origin": "http://evil.example.com"}
        )
        assert evil_origin.status_code == 403
        fine = await http.post(world.url, json=INIT, headers={**headers, "Origin": "http://localhost:3000"})
        assert fine.status_code == 200


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- Tasks (2025-11-25), raw JSON-RPC --------------------------------------------------------------


class RawSession:
    def __init__(self, http: httpx.AsyncClient, url: str, token: str) -> None:
        self.http, self.url, self.token = http, url, token
        self.session_id: str | None = None
        self.next_id = 10

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.next_id += 1
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            body["params"] = params
        headers = {**ACCEPT, **_auth(self.token), "MCP-Protocol-Version": "2025-11-25"}
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        response = await self.http.post(self.url, json=body, headers=headers)
        assert response.status_code == 200, response.text
        self.session_id = response.headers.get("mcp-session-id", self.session_id)
        for line in response.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                message: dict[str, Any] = json.loads(line[5:])
                if message.get("id") == self.next_id:
                    return message
        raise AssertionError(f"no response in {response.text!r}")

    async def open(self) -> dict[str, Any]:
        self.next_id = 0
        init = await self.request("initialize", INIT["params"])  # type: ignore[arg-type]
        headers = {**ACCEPT, **_auth(self.token), "Mcp-Session-Id": self.session_id or ""}
        await self.http.post(
            self.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers
        )
        return init


async def test_task_driven_to_completed(world: World, client: httpx.AsyncClient, backends: Backends) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        mcp = RawSession(http, world.url, world.member)
        init = await mcp.open()
        assert init["result"]["capabilities"]["tasks"]["requests"]["tools"]["call"] == {}
        key = uuid.uuid4().hex
        gate = backends.gate(key)
        created = await mcp.request(
            "tools/call", {"name": "hold", "arguments": {"key": key}, "task": {"ttl": 60000}}
        )
        task = created["result"]["task"]
        assert task["status"] == "working"
        task_id = task["taskId"]
        # the task is the job, visible over REST
        job = (await client.get(f"/v1/jobs/{task_id}")).json()
        assert job["kind"] == "call_tool" and job["status"] in ("queued", "running")
        assert await asyncio.to_thread(gate.entered.wait, 10)
        got = await mcp.request("tasks/get", {"taskId": task_id})
        assert got["result"]["status"] == "working"
        listed = await mcp.request("tasks/list", {})
        assert task_id in [t["taskId"] for t in listed["result"]["tasks"]]
        waiting = asyncio.create_task(mcp.request("tasks/result", {"taskId": task_id}))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        gate.release()
        result = (await waiting)["result"]
        assert result["content"][0]["text"] == f"released {key}"
        assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task_id}
        assert (await mcp.request("tasks/get", {"taskId": task_id}))["result"]["status"] == "completed"
        assert (await client.get(f"/v1/jobs/{task_id}")).json()["status"] == "completed"
        again = await mcp.request("tasks/cancel", {"taskId": task_id})
        assert again["error"]["code"] == -32602
        unknown = await mcp.request("tasks/get", {"taskId": uuid.uuid4().hex})
        assert unknown["error"]["code"] == -32602


async def test_task_driven_to_cancelled(world: World, client: httpx.AsyncClient, backends: Backends) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        mcp = RawSession(http, world.url, world.member)
        await mcp.open()
        key = uuid.uuid4().hex
        gate = backends.gate(key)
        created = await mcp.request("tools/call", {"name": "hold", "arguments": {"key": key}, "task": {}})
        task_id = created["result"]["task"]["taskId"]
        assert await asyncio.to_thread(gate.entered.wait, 10)
        cancelled = await mcp.request("tasks/cancel", {"taskId": task_id})
        assert cancelled["result"]["status"] == "cancelled", cancelled
        assert (await client.get(f"/v1/jobs/{task_id}")).json()["status"] == "cancelled"
        result = await mcp.request("tasks/result", {"taskId": task_id})
        assert result["result"]["isError"] is True


async def test_rest_job_is_a_task(world: World, client: httpx.AsyncClient) -> None:
    """The other way round: a job submitted over REST is visible with tasks/get."""
    member = {"Authorization": f"Bearer {world.member}"}
    gateway = world.gateways[0]["name"]
    submitted = await client.post(
        f"/v1/tools/{gateway}.echo/jobs", json={"arguments": {"text": "r"}}, headers=member
    )
    job_id = submitted.json()["job_id"]
    async with httpx.AsyncClient(timeout=30) as http:
        mcp = RawSession(http, world.url, world.member)
        await mcp.open()
        result = await mcp.request("tasks/result", {"taskId": job_id})
        assert result["result"]["content"][0]["text"] == "r"
        assert (await mcp.request("tasks/get", {"taskId": job_id}))["result"]["status"] == "completed"


# --- Tasks extension (2026-07-28, io.modelcontextprotocol/tasks), the SDK client ----------------


class TaskHandle(mcp_types.Result):
    """SEP-2663 `CreateTaskResult`: `resultType: "task"` and the task's fields."""

    result_type: Literal["task"] = "task"
    task_id: str
    status: str
    created_at: str
    last_updated_at: str
    ttl_ms: int | None
    poll_interval_ms: int | None = None


class _UpdateParams(mcp_types.GetTaskRequestParams):
    input_responses: dict[str, Any]


class _TaskRequest(mcp_types.Request[Any, str]):
    name_param = "taskId"  # SEP-2663: Mcp-Name carries the task id


class TasksExtension(ClientExtension):
    identifier = "io.modelcontextprotocol/tasks"

    def claims(self) -> list[ResultClaim[Any]]:
        async def resolve(handle: TaskHandle, ctx: ClaimContext) -> mcp_types.CallToolResult:
            raise AssertionError("the tests drive the task themselves")

        return [ResultClaim(result_type="task", model=TaskHandle, resolve=resolve)]


async def _task_request(mcp: Client, method: str, task_id: str) -> dict[str, Any]:
    params = (
        _UpdateParams(task_id=task_id, input_responses={})
        if method == "tasks/update"
        else mcp_types.GetTaskRequestParams(task_id=task_id)
    )
    result: dict[str, Any] = await mcp.session.send_request(
        _TaskRequest(method=method, params=params), TypeAdapter(dict[str, Any])
    )
    return result


@contextlib.asynccontextmanager
async def tasks_client(url: str, token: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers=_auth(token), timeout=httpx2.Timeout(30, read=None)) as http,
        Client(
            streamable_http_client(url, http_client=http),  # type: ignore[arg-type]
            mode="auto",
            extensions=[TasksExtension()],
        ) as mcp,
    ):
        assert mcp.protocol_version == "2026-07-28"
        yield mcp


async def test_extension_task_driven_to_completed(
    world: World, client: httpx.AsyncClient, backends: Backends
) -> None:
    async with tasks_client(world.url, world.member) as mcp:
        assert mcp.server_capabilities.extensions == {"io.modelcontextprotocol/tasks": {}}
        assert mcp.server_capabilities.tasks is None
        key = uuid.uuid4().hex
        gate = backends.gate(key)
        handle = await mcp.session.call_tool("hold", {"key": key}, allow_claimed=True)
        assert isinstance(handle, TaskHandle), handle
        assert handle.status == "working" and handle.poll_interval_ms
        job = (await client.get(f"/v1/jobs/{handle.task_id}")).json()  # the task is the job
        assert job["kind"] == "call_tool" and job["status"] in ("queued", "running")
        assert await asyncio.to_thread(gate.entered.wait, 10)
        got = await _task_request(mcp, "tasks/get", handle.task_id)
        assert got["status"] == "working" and "result" not in got
        # nothing asked: tasks/update with no responses is only acknowledged
        ack = await _task_request(mcp, "tasks/update", handle.task_id)
        assert set(ack) <= {"resultType", "_meta"}, ack
        gate.release()
        for _ in range(200):
            got = await _task_request(mcp, "tasks/get", handle.task_id)
            if got["status"] != "working":
                break
            await asyncio.sleep(0.05)
        assert got["status"] == "completed", got
        assert got["result"]["content"][0]["text"] == f"released {key}"
        assert got["result"]["isError"] is False
        assert (await client.get(f"/v1/jobs/{handle.task_id}")).json()["status"] == "completed"
        with pytest.raises(MCPError) as unknown:
            await _task_request(mcp, "tasks/get", uuid.uuid4().hex)
        assert unknown.value.error.code == -32602
        with pytest.raises(MCPError) as gone:  # 2025-11-25 only
            await _task_request(mcp, "tasks/result", handle.task_id)
        assert gone.value.error.code == -32601


async def test_extension_task_driven_to_cancelled(
    world: World, client: httpx.AsyncClient, backends: Backends
) -> None:
    async with tasks_client(world.url, world.member) as mcp:
        key = uuid.uuid4().hex
        gate = backends.gate(key)
        handle = await mcp.session.call_tool("hold", {"key": key}, allow_claimed=True)
        assert isinstance(handle, TaskHandle), handle
        assert await asyncio.to_thread(gate.entered.wait, 10)
        ack = await _task_request(mcp, "tasks/cancel", handle.task_id)
        assert ack.get("resultType", "complete") == "complete"
        assert set(ack) <= {"resultType", "_meta"}, ack
        for _ in range(200):
            got = await _task_request(mcp, "tasks/get", handle.task_id)
            if got["status"] != "working":
                break
            await asyncio.sleep(0.05)
        assert got["status"] == "cancelled", got
        assert (await client.get(f"/v1/jobs/{handle.task_id}")).json()["status"] == "cancelled"
        # cancelling a terminal task is acknowledged, not an error (eventually consistent)
        await _task_request(mcp, "tasks/cancel", handle.task_id)


async def test_extension_not_declared_runs_synchronously(world: World) -> None:
    """A 2026-07-28 client that does not declare the extension gets the CallToolResult."""
    async with mcp_client(world.url, world.member, mode="auto") as mcp:
        added = await mcp.call_tool("add", {"a": 2, "b": 3})
        assert added.content[0].text == "5"  # type: ignore[union-attr]
