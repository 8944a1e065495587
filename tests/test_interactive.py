"""A backend's questions across the queue: elicitation and sampling during a job reach the
caller in its own protocol (2025-11-25: a server-to-client request on the call's stream;
2026-07-28: an `InputRequiredResult` and a retry), or REST (`POST /v1/jobs/{id}/input`), and the
answer goes back to the worker holding the backend's request. Driven by the official SDK client.

The backend (an SDK `MCPServer` of its own, in a thread) asks through resolvers, which speak both
revisions: served as is, the worker reaches it on 2026-07-28 and the backend asks by returning
`InputRequiredResult`; behind a filter refusing `server/discover`, on 2025-11-25, it sends
`elicitation/create` mid-call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import httpx2
import mcp_types as types
import pytest
import uvicorn
from fastapi import FastAPI
from mcp import Client, MCPError
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.server import MCPServer
from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver.resolve import Elicit, Resolve, Sample
from pydantic import BaseModel, TypeAdapter

from shared.config import Settings
from tests.backends import RefuseDiscover, ServerThread, free_port
from tests.conformance.fixture_backend import FixtureBackend
from tests.conftest import isolated, running_worker, serve, unique
from tests.test_invariant import _assert_nothing_held
from tests.test_mcp_frontdoor import (
    RawSession,
    TaskHandle,
    _task_request,
    _TaskRequest,
    _UpdateParams,
    tasks_client,
)
from tests.test_mcp_pushes import _frames, _listen_raw
from tests.test_replicas import TaskStatusWatch


class Name(BaseModel):
    name: str


def ask_name(prompt: str) -> Elicit[Name]:
    return Elicit(prompt, Name)


def ask_model(question: str) -> Sample:
    return Sample(
        [types.SamplingMessage(role="user", content=types.TextContent(type="text", text=question))],
        max_tokens=20,
    )


# Questions the backend holds back until the test lets them go (by prompt), so that a listener
# can be in place before the backend asks.
HELD: dict[str, threading.Event] = {}


def held(prompt: str) -> threading.Event:
    return HELD.setdefault(prompt, threading.Event())


def ask_name_when_let(prompt: str) -> Elicit[Name]:
    held(prompt).wait(20)  # a sync resolver: the SDK runs it in a thread
    return Elicit(prompt, Name)


def ask_again(
    prompt: str, first: Annotated[ElicitationResult[Name], Resolve(ask_name_when_let)]
) -> Elicit[Name]:
    """The second question, asked once the first is answered (and the test lets it go)."""
    held(f"{prompt} again").wait(20)
    return Elicit(f"{prompt} and after {_name_of(first)}?", Name)


def _name_of(who: ElicitationResult[Name]) -> str:
    return who.data.name if isinstance(who, AcceptedElicitation) else who.action


def build_backend() -> MCPServer:
    server = MCPServer("interactive-backend")

    @server.tool()
    async def greet(prompt: str, who: Annotated[ElicitationResult[Name], Resolve(ask_name)]) -> str:
        """Ask the user's name, then greet them."""
        if isinstance(who, AcceptedElicitation):
            return f"hello {who.data.name}"
        return f"no name ({who.action})"

    @server.tool()
    async def greet_later(
        prompt: str, who: Annotated[ElicitationResult[Name], Resolve(ask_name_when_let)]
    ) -> str:
        """Ask the user's name once the test lets the question go, then greet them."""
        return f"hello {_name_of(who)}"

    @server.tool()
    async def greet_twice(
        prompt: str,
        first: Annotated[ElicitationResult[Name], Resolve(ask_name_when_let)],
        second: Annotated[ElicitationResult[Name], Resolve(ask_again)],
    ) -> str:
        """Two questions in a row (the second once the first is answered), then a greeting."""
        return f"hello {_name_of(first)} and {_name_of(second)}"

    @server.tool()
    async def think(question: str, reply: Annotated[types.CreateMessageResult, Resolve(ask_model)]) -> str:
        """Ask the client's model."""
        content = reply.content
        return f"model said: {content.text if isinstance(content, types.TextContent) else '?'}"

    return server


class Backend(ServerThread):
    """The backend served on loopback as is (2026-07-28), 2025-11-25 only, and over legacy SSE."""

    def __init__(self) -> None:
        super().__init__("interactive-backend")
        self.urls: dict[str, str] = {}

    def start(self) -> None:
        super().start()
        server = build_backend()
        for revision, app, path in (
            ("2026-07-28", server.streamable_http_app(), "/mcp"),
            ("2025-11-25", RefuseDiscover(server.streamable_http_app()), "/mcp"),
            ("sse", server.sse_app(), "/sse"),  # legacy HTTP+SSE: questions come on the GET stream
        ):
            self.urls[revision] = self.serve(app, path)


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    served = Backend()
    served.start()
    yield served
    served.stop()


@dataclass
class World:
    app: FastAPI
    http: httpx.AsyncClient  # the platform admin, on the app
    url: dict[str, str]  # the MCP endpoint of a server per backend revision
    gateway: dict[str, str]  # gateway name per backend revision
    team: str
    member: str
    other: str  # a member token of the same team, another caller


@contextlib.asynccontextmanager
async def world_of(settings: Settings, backend: Backend, timeout_s: float = 30.0) -> AsyncIterator[World]:
    """An API (on a loopback port) and a worker of their own, a team, a gateway per backend
    revision and a server on each."""
    async with serve(settings) as (app, http), running_worker(settings):
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
        )
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        team = (await http.post("/v1/teams", json={"name": unique("ask")})).json()["id"]
        urls, gateways = {}, {}
        for revision, url in backend.urls.items():
            name = unique()
            transport = "sse" if revision == "sse" else "streamable_http"
            made = await http.post(
                "/v1/gateways",
                json={"name": name, "url": url, "team": team, "timeout_s": timeout_s, "transport": transport},
            )
            assert made.status_code == 201, made.text
            created = await http.post(
                "/v1/servers",
                json={
                    "name": unique("srv"),
                    "team": team,
                    "tools": [f"{name}.{tool}" for tool in ("greet", "greet_later", "greet_twice", "think")],
                },
            )
            assert created.status_code == 201, created.text
            urls[revision] = f"http://127.0.0.1:{port}{created.json()['mcp_path']}"
            gateways[revision] = name
        tokens = []
        for label in ("member", "other"):
            minted = await http.post("/v1/tokens", json={"name": label, "team": team, "role": "member"})
            tokens.append(minted.json()["token"])
        try:
            yield World(app, http, urls, gateways, team, tokens[0], tokens[1])
        finally:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)


@pytest.fixture(scope="module")
async def world(settings: Settings, backend: Backend) -> AsyncIterator[World]:
    async with world_of(isolated(settings), backend) as made:
        yield made


async def answer_name(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
    assert isinstance(params, types.ElicitRequestFormParams)
    return types.ElicitResult(action="accept", content={"name": f"Ada ({params.message})"})


async def answer_model(
    context: ClientRequestContext, params: types.CreateMessageRequestParams
) -> types.CreateMessageResult:
    asked = params.messages[0].content
    text = asked.text if isinstance(asked, types.TextContent) else "?"
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(text=f"42 to {text}"), model="test-model"
    )


@contextlib.asynccontextmanager
async def mcp_client(url: str, token: str, mode: str, **callbacks: Any) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=None)
        ) as h,
        Client(streamable_http_client(url, http_client=h), mode=mode, **callbacks) as mcp,  # type: ignore[arg-type]
    ):
        yield mcp


CLIENTS = ["legacy", "2026-07-28"]  # the client's revision: 2025-11-25 (initialize), or 2026-07-28
BACKENDS = ["2025-11-25", "2026-07-28"]  # the revision the worker speaks to the backend


@pytest.mark.parametrize("backend_revision", BACKENDS)
@pytest.mark.parametrize("mode", CLIENTS)
async def test_elicitation_answered_by_the_client(world: World, mode: str, backend_revision: str) -> None:
    async with mcp_client(
        world.url[backend_revision], world.member, mode, elicitation_callback=answer_name
    ) as mcp:
        assert mcp.protocol_version == ("2025-11-25" if mode == "legacy" else mode)
        result = await mcp.call_tool("greet", {"prompt": "your name?"})
    assert not result.is_error, result
    assert isinstance(result.content[0], types.TextContent)
    assert result.content[0].text == "hello Ada (your name?)"


@pytest.mark.parametrize("backend_revision", BACKENDS)
@pytest.mark.parametrize("mode", CLIENTS)
async def test_sampling_answered_by_the_client(world: World, mode: str, backend_revision: str) -> None:
    async with mcp_client(
        world.url[backend_revision], world.member, mode, sampling_callback=answer_model
    ) as mcp:
        result = await mcp.call_tool("think", {"question": "meaning?"})
    assert not result.is_error, result
    assert isinstance(result.content[0], types.TextContent)
    assert result.content[0].text == "model said: 42 to meaning?"


async def test_no_database_connection_held_while_the_client_is_asked(world: World, database_url: str) -> None:
    """While the question waits on the MCP client, neither the API nor anything else of ours
    holds a PostgreSQL connection."""
    checked = []

    async def answer_after_checking(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        await _assert_nothing_held(world.app, database_url)
        checked.append(True)
        return await answer_name(context, params)

    async with mcp_client(
        world.url["2025-11-25"], world.member, "legacy", elicitation_callback=answer_after_checking
    ) as mcp:
        result = await mcp.call_tool("greet", {"prompt": "held?"})
    assert checked and not result.is_error, result


async def test_concurrent_calls_on_one_pooled_session_get_their_own_answers(world: World) -> None:
    """Many jobs share the worker's session to the backend: each question reaches its own caller."""
    async with mcp_client(
        world.url["2025-11-25"], world.member, "legacy", elicitation_callback=answer_name
    ) as mcp:
        results = await asyncio.gather(*(mcp.call_tool("greet", {"prompt": f"q{i}"}) for i in range(6)))
    texts = [r.content[0].text for r in results if isinstance(r.content[0], types.TextContent)]
    assert texts == [f"hello Ada (q{i})" for i in range(6)]


async def test_backend_over_legacy_sse_transport(world: World) -> None:
    """A backend reached over the legacy HTTP+SSE transport asks too (a question outside the
    call's context is tests/test_worker_interactive.py's)."""
    async with mcp_client(world.url["sse"], world.member, "legacy", elicitation_callback=answer_name) as mcp:
        result = await mcp.call_tool("greet", {"prompt": "over sse?"})
    assert not result.is_error, result
    assert isinstance(result.content[0], types.TextContent)
    assert result.content[0].text == "hello Ada (over sse?)"


async def _input_required(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    for _ in range(100):
        body: dict[str, Any] = (await http.get(f"/v1/jobs/{job_id}", params={"wait": 5})).json()
        if body["status"] == "input_required":
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never asked: {body}")


@pytest.mark.parametrize("backend_revision", BACKENDS)
async def test_rest_async_job_answered_over_rest(
    world: World, backend_revision: str, database_url: str
) -> None:
    http = world.http
    gateway = world.gateway[backend_revision]
    headers = {"Authorization": f"Bearer {world.member}"}
    submitted = await http.post(
        f"/v1/tools/{gateway}.greet/jobs", json={"arguments": {"prompt": "who?"}}, headers=headers
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    asked = await _input_required(http, job_id)
    [(key, question)] = asked["input_requests"].items()
    assert question["method"] == "elicitation/create"
    assert question["params"]["message"] == "who?"
    # While the job waits for a person, no database connection is held.
    await _assert_nothing_held(world.app, database_url)

    url = f"/v1/jobs/{job_id}/input"
    bad = await http.post(url, json={"responses": {key: {"result": {"action": "maybe"}}}}, headers=headers)
    assert bad.status_code == 422, bad.text
    unknown = await http.post(
        url, json={"responses": {"nope": {"result": {"action": "decline"}}}}, headers=headers
    )
    assert unknown.status_code == 422, unknown.text
    missing = await http.post(
        "/v1/jobs/0123456789abcdef/input", json={"responses": {key: {}}}, headers=headers
    )
    assert missing.status_code == 404, missing.text

    answer = {"result": {"action": "accept", "content": {"name": "Grace"}}}
    taken = await http.post(url, json={"responses": {key: answer}}, headers=headers)
    assert taken.status_code == 200, taken.text
    done = (await http.get(f"/v1/jobs/{job_id}", params={"wait": 10})).json()
    assert done["status"] == "completed", done
    assert done["result"]["content"][0]["text"] == "hello Grace"
    assert "input_requests" not in done
    again = await http.post(url, json={"responses": {key: answer}}, headers=headers)
    assert again.status_code == 409, again.text


async def test_job_waiting_for_input_can_be_cancelled(world: World) -> None:
    submitted = await world.http.post(
        f"/v1/tools/{world.gateway['2025-11-25']}.greet/jobs", json={"arguments": {"prompt": "stop?"}}
    )
    job_id = submitted.json()["job_id"]
    await _input_required(world.http, job_id)
    cancelled = await world.http.delete(f"/v1/jobs/{job_id}")
    assert cancelled.status_code in (200, 202), cancelled.text
    done = (await world.http.get(f"/v1/jobs/{job_id}", params={"wait": 10})).json()
    assert done["status"] == "cancelled", done
    late = await world.http.post(
        f"/v1/jobs/{job_id}/input", json={"responses": {"x": {"result": {"action": "decline"}}}}
    )
    assert late.status_code == 409, late.text


async def test_forged_or_foreign_request_state_is_refused(world: World) -> None:
    """A 2026-07-28 client's `requestState` is sealed to its caller: another caller's retry with
    it, or a forged one, is refused; the rightful retry then completes the job."""
    url = world.url["2025-11-25"]
    async with mcp_client(url, world.member, "2026-07-28") as mine:
        first = await mine.session.call_tool("greet", {"prompt": "name?"}, allow_input_required=True)
        assert isinstance(first, types.InputRequiredResult)
        assert first.request_state is not None and first.input_requests
        [key] = first.input_requests
        answers: dict[str, Any] = {key: types.ElicitResult(action="accept", content={"name": "Lin"})}
        # Not readable: the job id is not in the clear.
        assert "job" not in first.request_state
        async with mcp_client(url, world.other, "2026-07-28") as theirs:
            with pytest.raises(MCPError) as foreign:
                await theirs.session.call_tool(
                    "greet",
                    {"prompt": "name?"},
                    input_responses=answers,
                    request_state=first.request_state,
                    allow_input_required=True,
                )
        assert foreign.value.code == types.INVALID_PARAMS
        forged = json.dumps({"job": "0" * 32})
        with pytest.raises(MCPError):
            await mine.session.call_tool(
                "greet",
                {"prompt": "name?"},
                input_responses=answers,
                request_state=forged,
                allow_input_required=True,
            )
        with pytest.raises(MCPError):  # bound to the call it came from: other arguments
            await mine.session.call_tool(
                "greet",
                {"prompt": "other"},
                input_responses=answers,
                request_state=first.request_state,
                allow_input_required=True,
            )
        done = await mine.session.call_tool(
            "greet",
            {"prompt": "name?"},
            input_responses=answers,
            request_state=first.request_state,
            allow_input_required=True,
        )
        assert isinstance(done, types.CallToolResult)
        assert isinstance(done.content[0], types.TextContent) and done.content[0].text == "hello Lin"
        with pytest.raises(MCPError):  # answered once: a replay finds nothing to answer
            await mine.session.call_tool(
                "greet",
                {"prompt": "name?"},
                input_responses=answers,
                request_state=first.request_state,
                allow_input_required=True,
            )


@pytest.mark.parametrize("backend_revision", BACKENDS)
async def test_unanswered_question_times_out(
    settings: Settings, backend: Backend, backend_revision: str
) -> None:
    """No answer within MCPQ_INPUT_TIMEOUT_S: the job fails with input_timeout, and the backend's
    request got an error (its call ended, so the job did). The backend's own timeout is shorter
    than the wait: waiting on a person is off its clock."""
    quick = isolated(settings, input_timeout_s=1.5)
    async with world_of(quick, backend, timeout_s=1.0) as made:
        submitted = await made.http.post(
            f"/v1/tools/{made.gateway[backend_revision]}.greet/jobs",
            json={"arguments": {"prompt": "anyone?"}},
        )
        job_id = submitted.json()["job_id"]
        asked = await _input_required(made.http, job_id)
        # A long poll that began while the job asked ends at its end, not at the same question.
        done = (await made.http.get(f"/v1/jobs/{job_id}", params={"wait": 15})).json()
        assert asked["input_requests"]
        assert done["status"] == "failed", done
        assert done["error"]["type"] == "input_timeout", done
        late = await made.http.post(
            f"/v1/jobs/{job_id}/input", json={"responses": {"x": {"result": {"action": "decline"}}}}
        )
        assert late.status_code == 409, late.text


class _Result(types.Request[types.GetTaskPayloadRequestParams, str]):
    """tasks/result (2025-11-25)."""


async def test_task_2025_answered_through_tasks_result(world: World) -> None:
    """2025-11-25 Tasks: the task is input_required; tasks/result carries the question to the
    client (tagged with the task) and its answer back, then returns the payload."""
    asked: list[types.ElicitRequestParams] = []

    async def remember(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        asked.append(params)
        return await answer_name(context, params)

    url = world.url["2025-11-25"]
    async with httpx.AsyncClient(timeout=30) as http:  # the SDK client cannot send a task-augmented call
        raw = RawSession(http, url, world.member)
        await raw.open()
        created = await raw.request(
            "tools/call", {"name": "greet", "arguments": {"prompt": "tasked?"}, "task": {"ttl": 60000}}
        )
    task_id = created["result"]["task"]["taskId"]
    # Another session of the same caller drives the task (tasks are the team's jobs).
    async with mcp_client(url, world.member, "legacy", elicitation_callback=remember) as mcp:
        for _ in range(100):
            got = await mcp.session.send_request(
                _Result(method="tasks/get", params=types.GetTaskPayloadRequestParams(task_id=task_id)),
                TypeAdapter(dict[str, Any]),
            )
            if got["status"] == "input_required":
                break
            await asyncio.sleep(0.05)
        assert got["status"] == "input_required", got
        payload = await mcp.session.send_request(
            _Result(method="tasks/result", params=types.GetTaskPayloadRequestParams(task_id=task_id)),
            TypeAdapter(dict[str, Any]),
        )
    assert payload["content"][0]["text"] == "hello Ada (tasked?)"
    assert asked and asked[0].meta is not None
    assert asked[0].meta["io.modelcontextprotocol/related-task"] == {"taskId": task_id}  # type: ignore[typeddict-item]


async def test_task_2026_answered_with_tasks_update(world: World) -> None:
    """2026-07-28 tasks extension: tasks/get shows input_required with the inputRequests;
    tasks/update answers them; the task completes."""
    async with tasks_client(world.url["2026-07-28"], world.member) as mcp:
        handle = await mcp.session.call_tool("greet", {"prompt": "via update?"}, allow_claimed=True)
        assert isinstance(handle, TaskHandle), handle
        for _ in range(100):
            got = await _task_request(mcp, "tasks/get", handle.task_id)
            if got["status"] == "input_required":
                break
            await asyncio.sleep(0.05)
        assert got["status"] == "input_required", got
        [(key, question)] = got["inputRequests"].items()
        assert question["method"] == "elicitation/create"
        update = _UpdateParams(
            task_id=handle.task_id, input_responses={key: {"action": "accept", "content": {"name": "Kay"}}}
        )
        await mcp.session.send_request(
            _TaskRequest(method="tasks/update", params=update), TypeAdapter(dict[str, Any])
        )
        with pytest.raises(MCPError):  # answered once
            await mcp.session.send_request(
                _TaskRequest(method="tasks/update", params=update), TypeAdapter(dict[str, Any])
            )
        for _ in range(100):
            got = await _task_request(mcp, "tasks/get", handle.task_id)
            if got["status"] == "completed":
                break
            await asyncio.sleep(0.05)
    assert got["result"]["content"][0]["text"] == "hello Kay"


# A backend that asks once, or twice in a row (the second question once the first is answered).
QUESTIONS = [("greet_later", 1), ("greet_twice", 2)]


async def _status_pushes(
    pushes: AsyncIterator[dict[str, Any]],
    prompt: str,
    on_input: Callable[[dict[str, Any]], Awaitable[None]],
) -> list[dict[str, Any]]:
    """A task's pushed statuses, up to its end. Each `input_required` push goes to `on_input`
    (which answers it); the backend holds a second question until the task was pushed as
    working again, so each push is awaited, never polled for."""
    pushed: list[dict[str, Any]] = []
    while not pushed or pushed[-1]["status"] in ("working", "input_required"):
        task = await asyncio.wait_for(anext(pushes), 20)
        pushed.append(task)
        if task["status"] == "input_required":
            await on_input(task)
        elif task["status"] == "working":
            held(f"{prompt} again").set()
    return pushed


def _assert_pushed(pushed: list[dict[str, Any]], questions: int) -> None:
    """`input_required` per question, `working` after each answer, then `completed`; the job ends
    as soon as its last answer is in, so that last `working` may be coalesced with the end."""
    statuses = [task["status"] for task in pushed]
    if statuses[-2:] == ["working", "completed"]:
        statuses = [*statuses[:-2], "completed"]
    assert statuses == ["input_required", "working"] * (questions - 1) + ["input_required", "completed"], [
        task["status"] for task in pushed
    ]


@pytest.mark.parametrize(("tool", "questions"), QUESTIONS)
async def test_task_2025_status_pushed_on_the_get_stream(world: World, tool: str, questions: int) -> None:
    """2025-11-25 Tasks: the session's GET stream hears `input_required` each time the task's
    backend asks, before anyone polls (the first push is what starts tasks/result), `working`
    once an answer went back, and `completed` at the end."""
    watch = TaskStatusWatch()
    stream_open = asyncio.Event()
    raw = RawSession(httpx.AsyncClient(timeout=30), world.url["2025-11-25"], world.member)

    async def seen(response: httpx2.Response) -> None:
        raw.session_id = response.headers.get("mcp-session-id", raw.session_id)
        if response.request.method == "GET" and response.status_code == 200:
            stream_open.set()

    async def pushes() -> AsyncIterator[dict[str, Any]]:
        while True:
            status = await watch.received.get()
            assert status.task_id == task_id
            yield status.model_dump(by_alias=True)

    prompt = unique("pushed")
    held(prompt).set()
    async with (
        raw.http,
        httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {world.member}"},
            timeout=httpx2.Timeout(30, read=None),
            event_hooks={"response": [seen]},
        ) as h,
        Client(
            streamable_http_client(raw.url, http_client=h),  # type: ignore[arg-type]
            mode="legacy",
            extensions=[watch],
            elicitation_callback=answer_name,
        ) as mcp,
        asyncio.TaskGroup() as group,
    ):
        await asyncio.wait_for(stream_open.wait(), 10)
        # The SDK client cannot send a task-augmented call: it goes raw, on the same session.
        created = await raw.request(
            "tools/call", {"name": tool, "arguments": {"prompt": prompt}, "task": {"ttl": 60000}}
        )
        task_id = created["result"]["task"]["taskId"]
        result: list[asyncio.Task[dict[str, Any]]] = []

        async def start_result(task: dict[str, Any]) -> None:
            # tasks/result relays every question of the task to this client's callback.
            if not result:
                params = types.GetTaskPayloadRequestParams(task_id=task_id)
                request = mcp.session.send_request(
                    _Result(method="tasks/result", params=params), TypeAdapter(dict[str, Any])
                )
                result.append(group.create_task(request))

        pushed = await _status_pushes(pushes(), prompt, start_result)
        payload = await asyncio.wait_for(result[0], 20)
    _assert_pushed(pushed, questions)
    assert payload["content"][0]["text"].startswith(f"hello Ada ({prompt})")


@pytest.mark.parametrize("backend_revision", BACKENDS)
@pytest.mark.parametrize(("tool", "questions"), QUESTIONS)
async def test_task_2026_status_pushed_on_a_listen_stream(
    world: World, backend_revision: str, tool: str, questions: int
) -> None:
    """2026-07-28 tasks extension, `tasksStatus` on `subscriptions/listen`: the stream says the
    task is working; then pushes `input_required` with its `inputRequests` each time the backend
    asks (answered from the push with tasks/update: nobody polls), `working` once answered, and
    `completed` with the result."""
    url = world.url[backend_revision]
    prompt = unique("listen")
    names = iter(["Ann", "Bo"])
    async with tasks_client(url, world.member) as mcp:
        handle = await mcp.session.call_tool(tool, {"prompt": prompt}, allow_claimed=True)
        assert isinstance(handle, TaskHandle), handle

        async def pushes(frames: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
            async for frame in frames:
                assert frame["method"] == "notifications/tasks/status", frame
                assert frame["params"]["taskId"] == handle.task_id
                yield frame["params"]

        async def answer(task: dict[str, Any]) -> None:
            [(key, question)] = task["inputRequests"].items()
            assert question["method"] == "elicitation/create"
            update = _UpdateParams(
                task_id=handle.task_id,
                input_responses={key: {"action": "accept", "content": {"name": next(names)}}},
            )
            await mcp.session.send_request(
                _TaskRequest(method="tasks/update", params=update), TypeAdapter(dict[str, Any])
            )

        auth = {"Authorization": f"Bearer {world.member}"}
        response = await _listen_raw(url, auth, {"tasksStatus": [handle.task_id]}, tasks=True)
        try:
            frames = _frames(response)
            ack = await asyncio.wait_for(anext(frames), 20)
            assert ack["method"] == "notifications/subscriptions/acknowledged", ack
            stream = pushes(frames)
            first = await asyncio.wait_for(anext(stream), 20)
            assert first["status"] == "working", first  # the backend holds its question
            held(prompt).set()  # the stream is in place: now the backend may ask
            pushed = await _status_pushes(stream, prompt, answer)
        finally:
            await response.aclose()
            await response.extensions["owner"].aclose()
    _assert_pushed(pushed, questions)
    expected = "hello Ann" if questions == 1 else "hello Ann and Bo"
    assert pushed[-1]["result"]["content"][0]["text"] == expected


async def test_elicitation_for_a_2025_06_18_client(world: World) -> None:
    """A 2025-06-18 client (raw JSON-RPC: the SDK client always offers 2025-11-25) gets the
    question as a server-to-client request on its call's stream, in that revision's form."""
    url = world.url["2026-07-28"]
    headers = {
        "Authorization": f"Bearer {world.member}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-06-18",
    }
    init = {
        "protocolVersion": "2025-06-18",
        "capabilities": {"elicitation": {}},
        "clientInfo": {"name": "old-client", "version": "1"},
    }
    async with httpx.AsyncClient(timeout=30) as http:
        opened = await http.post(
            url, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}, headers=headers
        )
        assert opened.status_code == 200, opened.text
        assert '"protocolVersion":"2025-06-18"' in opened.text
        headers["Mcp-Session-Id"] = opened.headers["mcp-session-id"]
        await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "greet", "arguments": {"prompt": "old?"}},
        }
        asked: dict[str, Any] | None = None
        result: dict[str, Any] | None = None
        async with http.stream("POST", url, json=call, headers=headers) as stream:
            async for line in stream.aiter_lines():
                if not line.startswith("data:") or not line[5:].strip():
                    continue
                message = json.loads(line[5:])
                if message.get("method") == "elicitation/create":
                    asked = message
                    answer = {
                        "jsonrpc": "2.0",
                        "id": message["id"],
                        "result": {"action": "accept", "content": {"name": "Old"}},
                    }
                    sent = await http.post(url, json=answer, headers=headers)
                    assert sent.status_code == 202, sent.text
                elif message.get("id") == 2:
                    result = message
                    break
    assert asked is not None
    assert asked["params"]["message"] == "old?" and "requestedSchema" in asked["params"]
    assert result is not None and result["result"]["content"][0]["text"] == "hello Old", result


@pytest.fixture(scope="module")
async def conformance_server(world: World, fixture_backend: FixtureBackend) -> AsyncIterator[str]:
    """The conformance fixture backend (tests/conformance/fixture_backend.py) behind a server."""
    name = unique("fx")
    made = await world.http.post(
        "/v1/gateways", json={"name": name, "url": fixture_backend.url, "team": world.team}
    )
    assert made.status_code == 201, made.text
    tools = [
        f"{name}.{tool}"
        for tool in ("test_sampling", "test_elicitation", "test_elicitation_sep1034_defaults")
    ]
    created = await world.http.post(
        "/v1/servers", json={"name": unique("fx"), "team": world.team, "tools": tools}
    )
    assert created.status_code == 201, created.text
    base = world.url["2025-11-25"].split("/v1/")[0]
    yield base + created.json()["mcp_path"]


@pytest.mark.parametrize("mode", CLIENTS)
async def test_conformance_fixture_asks_through_the_gateway(
    conformance_server: str, world: World, mode: str
) -> None:
    """The fixture's interactive tools (what the conformance scenarios call) through the gateway,
    on both client revisions; the worker reaches the fixture on 2026-07-28."""

    async def accept_all(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        return types.ElicitResult(action="accept", content={"username": "u", "email": "e@example.com"})

    async with mcp_client(
        conformance_server,
        world.member,
        mode,
        elicitation_callback=accept_all,
        sampling_callback=answer_model,
    ) as mcp:
        sampled = await mcp.call_tool("test_sampling", {"prompt": "hi"})
        asked = await mcp.call_tool("test_elicitation", {"message": "who?"})
    assert (
        isinstance(sampled.content[0], types.TextContent)
        and sampled.content[0].text == "LLM response: 42 to hi"
    )
    assert isinstance(asked.content[0], types.TextContent)
    assert (
        asked.content[0].text
        == 'User response: action=accept, content={"username": "u", "email": "e@example.com"}'
    )
