"""stdio backends: servers a worker runs as subprocesses, through REST and the MCP front door.

Two real servers: tests/stdio_server.py (the SDK's MCPServer, run with this interpreter) and
`mcp-server-time` from PyPI, run by its console script.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from redis.asyncio import Redis

from shared.backend_errors import BackendFailure
from shared.config import Settings
from shared.gateways import service as gateway_service
from shared.jobs.schemas import BackendSpec
from shared.security import SecretBox
from tests.backends import serving
from tests.conftest import instant, isolated, running_worker, serve, unique
from tests.test_secrets import _every_value_in_redis, _raw_gateway_row
from workers import backend_stdio
from workers.sessions import SessionPool

SERVER = str(Path(__file__).resolve().parent / "stdio_server.py")
TIME_SERVER = str(Path(sys.executable).parent / "mcp-server-time")


@dataclass
class Stack:
    settings: Settings
    app: FastAPI
    http: httpx.AsyncClient  # platform admin
    team: dict[str, Any]
    url: str  # the API on a loopback port (the MCP front door needs a real socket)


@pytest.fixture(scope="module")
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    """An API and a worker that may run this interpreter and mcp-server-time."""
    own = isolated(
        settings,
        stdio_allowed_commands=f"{sys.executable},{TIME_SERVER}",
        mcp_connect_timeout_s=5,
        stdio_max_processes=2,
    )
    async with serve(own) as (app, http), running_worker(own):
        team = (await http.post("/v1/teams", json={"name": unique("stdio")})).json()
        async with serving(app, lifespan="off") as url:
            yield Stack(own, app, http, team, url)
        await http.delete(f"/v1/teams/{team['id']}")


def exists(path: str) -> bool:
    return Path(path).exists()


def stdio_body(stack: Stack, *args: str, command: str = sys.executable, **extra: Any) -> dict[str, Any]:
    return {
        "name": unique("io"),
        "team": stack.team["id"],
        "transport": "stdio",
        "command": command,
        "args": list(args),
        **extra,
    }


@pytest.fixture(scope="module")
async def gateway(stack: Stack) -> AsyncIterator[dict[str, Any]]:
    """The SDK test server, registered once for the module (its process pool is reused)."""
    async with registered_server(stack, "sk-stdio-") as created:
        yield created


@contextlib.asynccontextmanager
async def registered_server(stack: Stack, secret_prefix: str) -> AsyncIterator[dict[str, Any]]:
    """A stdio gateway of the SDK test server with a fresh `STDIO_SECRET` (kept as "secret"),
    deleted on leaving."""
    body = stdio_body(stack, SERVER, env={"STDIO_SECRET": secret_prefix + uuid.uuid4().hex})
    response = await stack.http.post("/v1/gateways", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    created["secret"] = body["env"]["STDIO_SECRET"]
    yield created
    await stack.http.delete(f"/v1/gateways/{created['id']}")


async def call(stack: Stack, gateway: dict[str, Any], tool: str, **arguments: Any) -> dict[str, Any]:
    response = await stack.http.post(
        f"/v1/tools/{gateway['name']}.{tool}/call", json={"arguments": arguments}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def text(body: dict[str, Any]) -> str:
    return str(body["result"]["content"][0]["text"])


async def submit(stack: Stack, gateway: dict[str, Any], tool: str, **arguments: Any) -> str:
    response = await stack.http.post(
        f"/v1/tools/{gateway['name']}.{tool}/jobs", json={"arguments": arguments}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


# --- registering ---------------------------------------------------------------------------------


async def test_register_discovers_and_shows_no_env(stack: Stack, gateway: dict[str, Any]) -> None:
    assert gateway["transport"] == "stdio"
    assert gateway["url"] == ""
    assert gateway["command"] == sys.executable and gateway["args"] == [SERVER]
    assert gateway["server_name"] == "mcpq-stdio-test"
    assert gateway["tool_count"] == 7 and gateway["resource_count"] == 1 and gateway["prompt_count"] == 1
    shown = await stack.http.get(f"/v1/gateways/{gateway['id']}")
    assert shown.status_code == 200
    assert "env" not in shown.json() and gateway["secret"] not in shown.text
    tools = (await stack.http.get("/v1/tools", params={"gateway": gateway["name"]})).json()
    assert {t["name"] for t in tools["items"]} >= {"echo", "sleep", "hold", "pid"}


async def test_env_reaches_the_server_and_is_encrypted_everywhere(
    stack: Stack, gateway: dict[str, Any], database_url: str
) -> None:
    secret = gateway["secret"]
    done = await call(stack, gateway, "env", name="STDIO_SECRET")
    assert text(done) == hashlib.sha256(secret.encode()).hexdigest()
    # The worker's own environment is not passed on (it holds MCPQ_SECRET_KEYS).
    assert text(await call(stack, gateway, "env", name="MCPQ_SECRET_KEYS")) == ""
    row = json.loads(await asyncio.to_thread(_raw_gateway_row, database_url, gateway["id"]))
    assert secret not in json.dumps(row)
    assert SecretBox(stack.settings.secret_keys).open(row["env_enc"]) == {"STDIO_SECRET": secret}
    redis: Redis = stack.app.state.ctx.queue.redis
    assert secret.encode() not in await _every_value_in_redis(redis)
    for path in ("/v1/gateways", f"/v1/jobs/{done['job_id']}"):
        assert secret not in (await stack.http.get(path)).text


async def test_key_rotation_re_encrypts_env(stack: Stack, gateway: dict[str, Any], database_url: str) -> None:
    old_key, new_key = stack.settings.secret_keys, Fernet.generate_key().decode()
    sf = stack.app.state.ctx.session_factory
    await gateway_service.rotate_secrets(sf, SecretBox(f"{new_key},{old_key}"))
    try:
        row = json.loads(await asyncio.to_thread(_raw_gateway_row, database_url, gateway["id"]))
        assert SecretBox(new_key).open(row["env_enc"]) == {"STDIO_SECRET": gateway["secret"]}
        with pytest.raises(ValueError):
            SecretBox(old_key).open(row["env_enc"])
    finally:
        # Back to the key the running API and worker hold.
        await gateway_service.rotate_secrets(sf, SecretBox(f"{old_key},{new_key}"))


async def test_command_outside_the_allowlist_is_422(stack: Stack) -> None:
    response = await stack.http.post("/v1/gateways", json=stdio_body(stack, "-c", "true", command="/bin/sh"))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    assert "'/bin/sh' is not in MCPQ_STDIO_ALLOWED_COMMANDS" in body["detail"]


async def test_stdio_is_disabled_by_default(client: httpx.AsyncClient) -> None:
    """The run's shared API has no allowlist: stdio is off."""
    body = {"name": unique(), "transport": "stdio", "command": sys.executable, "args": [SERVER]}
    response = await client.post("/v1/gateways", json={**body, "team": "test-team"})
    assert response.status_code == 422, response.text
    assert "MCPQ_STDIO_ALLOWED_COMMANDS is empty" in response.json()["detail"]


async def test_a_team_admin_may_not_register_or_delete_stdio(stack: Stack, gateway: dict[str, Any]) -> None:
    minted = await stack.http.post(
        "/v1/tokens", json={"name": "adm", "team": stack.team["id"], "role": "admin"}
    )
    headers = {"Authorization": f"Bearer {minted.json()['token']}"}
    registered = await stack.http.post("/v1/gateways", json=stdio_body(stack, SERVER), headers=headers)
    assert registered.status_code == 403, registered.text
    assert "platform admin" in registered.json()["detail"]
    deleted = await stack.http.delete(f"/v1/gateways/{gateway['id']}", headers=headers)
    assert deleted.status_code == 403, deleted.text
    # The team admin still uses it like any gateway of its team.
    used = await stack.http.post(
        f"/v1/tools/{gateway['name']}.echo/call", json={"arguments": {"text": "mine"}}, headers=headers
    )
    assert used.status_code == 200 and text(used.json()) == "mine"


async def test_only_the_platform_admin_may_patch_stdio_and_not_its_http_fields(
    stack: Stack, gateway: dict[str, Any]
) -> None:
    minted = await stack.http.post(
        "/v1/tokens", json={"name": "adm", "team": stack.team["id"], "role": "admin"}
    )
    headers = {"Authorization": f"Bearer {minted.json()['token']}"}
    path = f"/v1/gateways/{gateway['id']}"
    # 403 whatever the body: a team admin learns nothing of the allowlist (no 422 for /bin/sh).
    for body in ({"timeout_s": 20}, {"command": "/bin/sh"}, {"args": [SERVER, "serve", "x"]}):
        refused = await stack.http.patch(path, json=body, headers=headers)
        assert refused.status_code == 403, refused.text
        assert "platform admin" in refused.json()["detail"]
    for body in ({"url": "http://127.0.0.1:1/mcp"}, {"headers": {"X-A": "b"}}):
        wrong = await stack.http.patch(path, json=body)
        assert wrong.status_code == 422, wrong.text
        assert "url, headers and auth are for HTTP gateways, not stdio ones" in wrong.json()["detail"]
    patched = await stack.http.patch(path, json={"timeout_s": gateway["timeout_s"]})
    assert patched.status_code == 200, patched.text
    assert patched.json()["refreshed_at"] == gateway["refreshed_at"]  # no discovery for that


@pytest.fixture
async def own_gateway(stack: Stack) -> AsyncIterator[dict[str, Any]]:
    """A stdio gateway of the test server for one test (PATCH changes it)."""
    async with registered_server(stack, "sk-old-") as created:
        yield created


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


async def until_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, f"the worker kept the old server process {pid}"
        await asyncio.sleep(0.05)


async def test_patch_of_args_and_env_runs_the_new_server_from_the_next_call(
    stack: Stack, own_gateway: dict[str, Any], database_url: str
) -> None:
    old_pid = int(text(await call(stack, own_gateway, "pid")))
    assert text(await call(stack, own_gateway, "env", name="STDIO_SECRET")) == sha(own_gateway["secret"])
    secret = "sk-new-" + uuid.uuid4().hex
    response = await stack.http.patch(
        f"/v1/gateways/{own_gateway['id']}",
        json={"args": [SERVER, "serve", "renamed-by-patch"], "env": {"STDIO_SECRET": secret}, "cwd": "/"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    # Discovered with the new command line before it was stored: the handshake's name is its args'.
    assert body["server_name"] == "renamed-by-patch" and body["args"] == [SERVER, "serve", "renamed-by-patch"]
    assert body["cwd"] == "/" and instant(body["refreshed_at"]) > instant(own_gateway["refreshed_at"])
    assert "env" not in body and secret not in response.text
    await until_gone(old_pid)  # the worker dropped the process of the old spec
    assert int(text(await call(stack, own_gateway, "pid"))) != old_pid
    assert text(await call(stack, own_gateway, "env", name="STDIO_SECRET")) == sha(secret)
    row = json.loads(await asyncio.to_thread(_raw_gateway_row, database_url, own_gateway["id"]))
    assert secret not in json.dumps(row)
    assert SecretBox(stack.settings.secret_keys).open(row["env_enc"]) == {"STDIO_SECRET": secret}
    # env: {} removes the extra variables, cwd: null the working directory.
    cleared = await stack.http.patch(f"/v1/gateways/{own_gateway['id']}", json={"env": {}, "cwd": None})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["cwd"] is None
    assert text(await call(stack, own_gateway, "env", name="STDIO_SECRET")) == ""


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (
            {"command": "/bin/sh", "args": ["-c", "true"]},
            422,
            "'/bin/sh' is not in MCPQ_STDIO_ALLOWED_COMMANDS",
        ),
        ({"args": [SERVER, "exit"]}, 502, "fatal: no configuration found"),
        ({"env": {"STDIO_SECRET": "x"}, "cwd": "/nonexistent-dir"}, 502, "nonexistent-dir"),
        ({"cwd": "relative"}, 422, "cwd must be an absolute path"),
        ({"command": None}, 422, "may not be null"),
    ],
)
async def test_a_patch_that_fails_changes_nothing(
    stack: Stack,
    own_gateway: dict[str, Any],
    database_url: str,
    body: dict[str, Any],
    status: int,
    detail: str,
) -> None:
    pid = int(text(await call(stack, own_gateway, "pid")))
    before = (await stack.http.get(f"/v1/gateways/{own_gateway['id']}")).json()
    row = await asyncio.to_thread(_raw_gateway_row, database_url, own_gateway["id"])
    response = await stack.http.patch(f"/v1/gateways/{own_gateway['id']}", json=body)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]
    if status == 502:  # the discovery's job says what kind of failure it was
        job = (await stack.http.get(f"/v1/jobs/{response.json()['job_id']}")).json()
        assert job["error"]["type"] == "backend_unavailable"
    after = (await stack.http.get(f"/v1/gateways/{own_gateway['id']}")).json()
    live = {"breaker", "last_seen_ok_at", "last_error", "last_error_at"}
    assert {k: v for k, v in after.items() if k not in live} == {
        k: v for k, v in before.items() if k not in live
    }
    assert await asyncio.to_thread(_raw_gateway_row, database_url, own_gateway["id"]) == row
    # The pooled process of the kept spec still serves.
    assert int(text(await call(stack, own_gateway, "pid"))) == pid
    assert text(await call(stack, own_gateway, "env", name="STDIO_SECRET")) == sha(own_gateway["secret"])


@pytest.mark.parametrize(
    "body",
    [
        {"transport": "stdio", "command": "x", "url": "http://127.0.0.1:1/mcp"},
        {
            "transport": "stdio",
            "command": "x",
            "auth": {
                "type": "oauth2_client_credentials",
                "token_url": "http://x/t",
                "client_id": "c",
                "client_secret": "s",
            },
        },
        {"transport": "stdio"},
        {"transport": "streamable_http", "command": "x", "url": "http://127.0.0.1:1/mcp"},
        {"transport": "streamable_http"},
        {"transport": "stdio", "command": "x", "cwd": "relative"},
        {"transport": "stdio", "command": "x", "env": {"BAD NAME": "v"}},
    ],
)
async def test_fields_that_do_not_fit_the_transport_are_422(stack: Stack, body: dict[str, Any]) -> None:
    response = await stack.http.post(
        "/v1/gateways", json={"name": unique(), "team": stack.team["id"], **body}
    )
    assert response.status_code == 422, response.text


# --- calls ---------------------------------------------------------------------------------------


async def test_call_sync_and_async_read_and_render(stack: Stack, gateway: dict[str, Any]) -> None:
    assert text(await call(stack, gateway, "echo", text="sync")) == "sync"
    job_id = await submit(stack, gateway, "echo", text="async")
    job = (await stack.http.get(f"/v1/jobs/{job_id}", params={"wait": 10})).json()
    assert job["status"] == "completed" and job["result"]["content"][0]["text"] == "async"
    read = await stack.http.post(f"/v1/resources/{gateway['name']}:demo://readme/read", json={})
    assert read.status_code == 200, read.text
    assert read.json()["result"]["contents"][0]["text"] == "hello from a stdio resource"
    rendered = await stack.http.post(
        f"/v1/prompts/{gateway['name']}.greet/render", json={"arguments": {"name": "Ada"}}
    )
    assert rendered.status_code == 200, rendered.text
    assert rendered.json()["result"]["messages"][0]["content"]["text"] == "Hello Ada"


async def test_calls_reuse_one_process_concurrently(stack: Stack, gateway: dict[str, Any]) -> None:
    """Five 1 s calls at once on one server process take about 1 s, not 5: the SDK's stdio
    server runs requests concurrently, so calls share a process (up to mcp_session_max_calls)."""
    pid = text(await call(stack, gateway, "pid"))
    started = time.monotonic()
    done = await asyncio.gather(*(call(stack, gateway, "sleep", seconds=1.0) for _ in range(5)))
    elapsed = time.monotonic() - started
    assert all(text(d) == "slept 1.0" for d in done)
    assert elapsed < 2.5, elapsed
    assert text(await call(stack, gateway, "pid")) == pid


async def test_the_server_asks_and_is_answered_over_rest(stack: Stack, gateway: dict[str, Any]) -> None:
    """A stdio server's elicitation during a job: input_required, answered at POST /v1/jobs/{id}/input."""
    job_id = await submit(stack, gateway, "who", prompt="your name?")
    for _ in range(100):
        body = (await stack.http.get(f"/v1/jobs/{job_id}", params={"wait": 5})).json()
        if body["status"] == "input_required":
            break
    [(key, question)] = body["input_requests"].items()
    assert question["method"] == "elicitation/create" and question["params"]["message"] == "your name?"
    answer = {"result": {"action": "accept", "content": {"name": "Io"}}}
    taken = await stack.http.post(f"/v1/jobs/{job_id}/input", json={"responses": {key: answer}})
    assert taken.status_code == 200, taken.text
    done = (await stack.http.get(f"/v1/jobs/{job_id}", params={"wait": 10})).json()
    assert done["status"] == "completed" and done["result"]["content"][0]["text"] == "hello Io", done


async def test_progress_is_reported(stack: Stack, gateway: dict[str, Any]) -> None:
    job_id = await submit(stack, gateway, "sleep", seconds=1.5)
    progress = None
    deadline = time.monotonic() + 10
    while progress is None and time.monotonic() < deadline:
        job = (await stack.http.get(f"/v1/jobs/{job_id}")).json()
        progress = job.get("progress")
        await asyncio.sleep(0.05)
    assert progress is not None, "no progress seen"
    assert progress["total"] == 15 and progress["message"].startswith("step ")
    done = (await stack.http.get(f"/v1/jobs/{job_id}", params={"wait": 10})).json()
    assert done["status"] == "completed"


async def test_cancel_reaches_the_server(stack: Stack, gateway: dict[str, Any], tmp_path: Path) -> None:
    marker = str(tmp_path / "hold")
    job_id = await submit(stack, gateway, "hold", marker=marker)
    deadline = time.monotonic() + 10
    while not exists(f"{marker}.started"):
        assert time.monotonic() < deadline, "the tool never started"
        await asyncio.sleep(0.05)
    cancelled = await stack.http.delete(f"/v1/jobs/{job_id}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    while not exists(f"{marker}.cancelled"):
        assert time.monotonic() < deadline + 5, "the server's tool was not cancelled"
        await asyncio.sleep(0.05)
    # The process survives its call's cancellation and takes the next one.
    assert text(await call(stack, gateway, "echo", text="after")) == "after"


async def test_a_killed_process_is_replaced_on_the_next_call(stack: Stack, gateway: dict[str, Any]) -> None:
    first = int(text(await call(stack, gateway, "pid")))
    os.kill(first, signal.SIGKILL)
    await asyncio.sleep(0.2)
    # `pid` is not retry-safe: it works only because the dead process left the pool at once.
    second = int(text(await call(stack, gateway, "pid")))
    assert second != first
    assert text(await call(stack, gateway, "echo", text="still")) == "still"


async def test_stderr_goes_to_the_worker_log_tagged_and_cut(
    stack: Stack, gateway: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="workers.backend_stdio")
    assert text(await call(stack, gateway, "shout", text="loud")) == "loud"
    deadline = time.monotonic() + 5
    while not (lines := [r.getMessage() for r in caplog.records if "shout loud" in r.getMessage()]):
        assert time.monotonic() < deadline, "stderr line not logged"
        await asyncio.sleep(0.05)
    (line,) = lines
    assert line.startswith(f"stdio {gateway['name']} stderr: shout loud xxx")
    assert line.endswith(" [cut]") and len(line) < backend_stdio.MAX_LINE + 100


def test_stderr_log_is_bounded_in_rate_and_line_length(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="workers.backend_stdio")
    log = backend_stdio.StderrLog("gw")
    log.data_received(b"".join(f"line {i}\n".encode() for i in range(1000)))
    log.data_received(b"y" * 5000)  # a line without its end yet, longer than MAX_LINE
    log.data_received(b"y" * 5000 + b"\nlast\n")
    log.connection_lost(None)
    messages = [r.getMessage() for r in caplog.records]
    logged = [m for m in messages if m.startswith("stdio gw stderr: line ")]
    assert len(logged) <= backend_stdio.BURST + 5
    assert log.head == [f"line {i}" for i in range(backend_stdio.HEAD_LINES)]
    assert any("more stderr lines not logged" in m or "stderr lines not logged" in m for m in messages)
    assert log.closed.is_set()


async def test_time_server_from_pypi_by_command(stack: Stack) -> None:
    created = await stack.http.post(
        "/v1/gateways", json=stdio_body(stack, "--local-timezone", "UTC", command=TIME_SERVER)
    )
    assert created.status_code == 201, created.text
    gw = created.json()
    try:
        assert gw["tool_count"] == 2
        now = await call(stack, gw, "get_current_time", timezone="UTC")
        assert now["result"]["isError"] is False
        assert json.loads(text(now))["timezone"] == "UTC"
        job_id = await submit(
            stack, gw, "convert_time", source_timezone="UTC", time="12:00", target_timezone="UTC"
        )
        job = (await stack.http.get(f"/v1/jobs/{job_id}", params={"wait": 10})).json()
        assert job["status"] == "completed", job
        assert json.loads(job["result"]["content"][0]["text"])["target"]["datetime"].endswith(
            "12:00:00+00:00"
        )
    finally:
        await stack.http.delete(f"/v1/gateways/{gw['id']}")


# --- servers that fail --------------------------------------------------------------------------


async def _refused(stack: Stack, mode: str) -> tuple[dict[str, Any], dict[str, Any], float]:
    started = time.monotonic()
    response = await stack.http.post("/v1/gateways", json=stdio_body(stack, SERVER, mode))
    elapsed = time.monotonic() - started
    assert response.status_code == 502, response.text
    body: dict[str, Any] = response.json()
    job = (await stack.http.get(f"/v1/jobs/{body['job_id']}")).json()
    return body, job, elapsed


async def test_a_server_that_exits_at_once_is_backend_unavailable_quickly(stack: Stack) -> None:
    body, job, elapsed = await _refused(stack, "exit")
    # Python's start, the SDK's shutdown and a moment for the last stderr lines: well inside the
    # connect timeout, which a server that only went silent would wait out.
    assert elapsed < stack.settings.mcp_connect_timeout_s, elapsed
    assert job["error"]["type"] == "backend_unavailable"
    assert "exited before answering the MCP handshake" in body["detail"]
    assert "fatal: no configuration found" in body["detail"]  # its stderr, quoted


async def test_garbage_on_stdout_is_a_protocol_error(stack: Stack) -> None:
    body, job, elapsed = await _refused(stack, "garbage")
    assert elapsed < stack.settings.mcp_connect_timeout_s, elapsed
    assert job["error"]["type"] == "protocol_error"
    assert "not JSON-RPC: 'Welcome! this is not JSON-RPC'" in body["detail"]


async def test_a_server_that_never_answers_times_out_at_the_connect_timeout(stack: Stack) -> None:
    body, job, elapsed = await _refused(stack, "silent")
    assert elapsed < stack.settings.mcp_connect_timeout_s + 3, elapsed
    assert job["error"]["type"] == "backend_unavailable"
    assert "did not answer the MCP handshake within 5s" in body["detail"]
    assert "stdio test server starting (silent)" in body["detail"]


# --- the MCP front door --------------------------------------------------------------------------


async def test_front_door_calls_reads_renders_with_progress_and_cancel(
    stack: Stack, gateway: dict[str, Any], tmp_path: Path
) -> None:
    name = gateway["name"]
    created = await stack.http.post(
        "/v1/servers",
        json={
            "name": unique("front"),
            "team": stack.team["id"],
            "tools": [f"{name}.echo", f"{name}.sleep", f"{name}.hold"],
            "resources": [f"{name}:demo://readme"],
            "prompts": [f"{name}.greet"],
        },
    )
    assert created.status_code == 201, created.text
    server = created.json()
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    headers = {"Authorization": f"Bearer {stack.settings.admin_token}"}
    endpoint = f"{stack.url}{server['mcp_path']}"
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=None)) as http,
        Client(streamable_http_client(endpoint, http_client=http)) as mcp,
    ):
        echoed = await mcp.call_tool("echo", {"text": "door"})
        assert echoed.content[0].text == "door"  # type: ignore[union-attr]
        slept = await mcp.call_tool("sleep", {"seconds": 1.0}, progress_callback=on_progress)
        assert slept.content[0].text == "slept 1.0"  # type: ignore[union-attr]
        read = await mcp.read_resource("demo://readme")
        assert read.contents[0].text == "hello from a stdio resource"  # type: ignore[union-attr]
        prompt = await mcp.get_prompt("greet", {"name": "Bo"})
        assert prompt.messages[0].content.text == "Hello Bo"  # type: ignore[union-attr]
    assert seen, "no progress reached the MCP client"

    # A client that gives up on a call (notifications/cancelled) cancels the server's tool.
    marker = str(tmp_path / "door")
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=None)) as http,
        Client(streamable_http_client(endpoint, http_client=http), mode="legacy") as mcp,
    ):
        call = asyncio.create_task(mcp.call_tool("hold", {"marker": marker}))
        deadline = time.monotonic() + 10
        while not exists(f"{marker}.started"):
            assert time.monotonic() < deadline, "the tool never started"
            await asyncio.sleep(0.05)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        while not exists(f"{marker}.cancelled"):
            assert time.monotonic() < deadline + 5, "the server's tool was not cancelled"
            await asyncio.sleep(0.05)
    await stack.http.delete(f"/v1/servers/{server['id']}")


# --- the worker's pool ---------------------------------------------------------------------------


def pool_spec(*args: str) -> BackendSpec:
    return {
        "gateway_id": str(uuid.uuid4()),
        "gateway": "pooled",
        "url": "",
        "transport": "stdio",
        "headers_enc": "",
        "timeout_s": 10,
        "command": sys.executable,
        "args": [SERVER, *args],
        "env_enc": "",
        "cwd": None,
    }


async def test_idle_processes_are_stopped(settings: Settings) -> None:
    own = settings.model_copy(update={"stdio_allowed_commands": sys.executable, "mcp_session_idle_s": 0.5})
    pool = SessionPool(own, SecretBox(own.secret_keys))
    pool.start()
    spec = pool_spec()
    try:

        async def pid(client: Client) -> int:
            result = await client.call_tool("pid", {})
            return int(result.content[0].text)  # type: ignore[union-attr]

        first = await pool.use(spec, pid)
        assert pool.open_sessions == 1
        deadline = time.monotonic() + 10
        while exists(f"/proc/{first}"):
            assert time.monotonic() < deadline, "the idle server process was not stopped"
            await asyncio.sleep(0.1)
        assert pool.open_sessions == 0
        assert await pool.use(spec, pid) != first  # a new one on demand
    finally:
        await pool.close()


async def test_a_failed_start_is_remembered_briefly_with_its_type(settings: Settings) -> None:
    """Jobs queued behind a server that just failed to start fail at once with the same typed
    error, instead of each starting it again."""
    own = settings.model_copy(update={"stdio_allowed_commands": sys.executable})
    pool = SessionPool(own, SecretBox(own.secret_keys))
    spec = pool_spec("exit")
    try:
        with pytest.raises(BackendFailure) as first:
            await pool.use(spec, lambda c: c.list_tools())
        started = time.monotonic()
        with pytest.raises(BackendFailure) as again:
            await pool.use(spec, lambda c: c.list_tools())
        assert time.monotonic() - started < 0.2
        assert first.value.kind == again.value.kind == "backend_unavailable"
        assert str(again.value) == str(first.value)
        assert str(first.value).startswith("stdio server `")
    finally:
        await pool.close()
