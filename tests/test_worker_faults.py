"""Worker faults with real `python -m workers` processes, against a private redis-server that the
tests stop and start (never the shared one): SIGKILL mid-call, SIGTERM drain, a Redis outage."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from shared.config import Settings
from tests.backends import Backends, free_port
from tests.conftest import TEAM, isolated, serve, worker_env

REDIS_SERVER = shutil.which("redis-server") or shutil.which("valkey-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="needs a redis-server binary on PATH")

# Short beats so a SIGKILLed worker is noticed in seconds (the defaults, 2 s and 10 s, give ~12 s).
HEARTBEAT_S, DEAD_AFTER_S = "0.5", "3"
WorkerFactory = Callable[..., subprocess.Popen[bytes]]


class PrivateRedis:
    """A redis-server of this module's own; AOF with fsync on every write, so a restart keeps
    every job."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        for _ in range(5):
            options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "always"]
            self.proc = subprocess.Popen(
                [str(REDIS_SERVER), "--port", str(self.port), *options, "--dir", str(self.data_dir)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        return
                except OSError:
                    time.sleep(0.05)
            self.proc.kill()
            self.proc.wait()
            self.port = free_port()  # taken meanwhile: only possible before anyone uses the server
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def own(settings: Settings, private_redis: PrivateRedis) -> Settings:
    return isolated(settings, redis_url=private_redis.url)


@pytest.fixture(scope="module")
async def api(own: Settings, client: httpx.AsyncClient) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    # `client` is asked for so that the shared test team exists in the database.
    async with serve(own) as served:
        yield served


@pytest.fixture
def spawn_worker(own: Settings, tmp_path: Path) -> Iterator[WorkerFactory]:
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(**env: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"worker{len(procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers"],
            env={
                **worker_env(own),
                "MCPQ_WORKER_METRICS_PORT": "0",
                "MCPQ_WORKER_HEARTBEAT_S": HEARTBEAT_S,
                "MCPQ_WORKER_DEAD_AFTER_S": DEAD_AFTER_S,
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        proc.kill()
        proc.wait(10)


async def _gateway(client: httpx.AsyncClient, backends: Backends) -> str:
    name = f"faults-{uuid.uuid4().hex[:6]}"
    created = await client.post(
        "/v1/gateways", json={"name": name, "url": backends.urls["stateful"], "team": TEAM}
    )
    assert created.status_code == 201, created.text
    return name


async def _submit_running(client: httpx.AsyncClient, name: str, tool: str, arguments: dict[str, Any]) -> str:
    response = await client.post(f"/v1/tools/{name}.{tool}/jobs", json={"arguments": arguments})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    for _ in range(200):
        if (await client.get(f"/v1/jobs/{job_id}")).json()["status"] == "running":
            return job_id
        await asyncio.sleep(0.05)
    raise AssertionError("the job never started")


async def _terminal(client: httpx.AsyncClient, job_id: str, within_s: float) -> dict[str, Any]:
    """The job once terminal; tolerates the API answering 503 while Redis comes back."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        response = await client.get(f"/v1/jobs/{job_id}", params={"wait": 1})
        if response.status_code == 200 and response.json()["status"] in ("completed", "failed", "cancelled"):
            job: dict[str, Any] = response.json()
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} not terminal within {within_s} s")


@pytest.mark.parametrize(
    ("tool", "expected"),
    [
        ("hold", "failed"),  # not idempotent: it may have run, so it is not run again
        ("sleep", "completed"),  # idempotentHint: run again by the surviving worker
    ],
)
async def test_sigkilled_worker_is_noticed_in_seconds(
    api: tuple[FastAPI, httpx.AsyncClient],
    spawn_worker: WorkerFactory,
    backends: Backends,
    tool: str,
    expected: str,
) -> None:
    _, client = api
    first = spawn_worker()
    name = await _gateway(client, backends)
    key = uuid.uuid4().hex
    arguments: dict[str, Any] = {"key": key} if tool == "hold" else {"seconds": 2}
    backends.gate(key)
    job_id = await _submit_running(client, name, tool, arguments)
    spawn_worker()  # the survivor, started after the job was claimed
    await asyncio.sleep(0.3)
    first.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    job = await _terminal(client, job_id, within_s=30)
    assert time.monotonic() - killed < 30
    assert job["status"] == expected, job
    assert job["attempts"] == 2
    if expected == "failed":
        assert job["error"]["type"] == "worker_lost"
    backends.gate(key).release()


async def test_sigterm_lets_a_short_call_finish(
    api: tuple[FastAPI, httpx.AsyncClient], spawn_worker: WorkerFactory, backends: Backends, own: Settings
) -> None:
    _, client = api
    worker = spawn_worker()  # the default drain: 30 s
    name = await _gateway(client, backends)
    key = uuid.uuid4().hex
    backends.gate(key)
    job_id = await _submit_running(client, name, "hold", {"key": key})  # not idempotent
    assert await asyncio.to_thread(backends.gate(key).entered.wait, 10)
    assert await _check(own) == 0  # the container health check sees the worker beat
    worker.send_signal(signal.SIGTERM)
    await asyncio.sleep(1.0)
    assert worker.poll() is None  # draining: the call is still running
    backends.gate(key).release()
    job = await _terminal(client, job_id, within_s=10)
    assert job["status"] == "completed", job  # no worker_lost
    assert job["attempts"] == 1
    assert await asyncio.to_thread(worker.wait, 10) == 0
    assert await _check(own) == 1  # it left cleanly: nothing for another worker to hand on


async def test_worker_started_while_redis_is_away_waits_for_it(
    api: tuple[FastAPI, httpx.AsyncClient],
    spawn_worker: WorkerFactory,
    backends: Backends,
    private_redis: PrivateRedis,
) -> None:
    _, client = api
    first = spawn_worker()
    name = await _gateway(client, backends)  # a worker must be up to register a gateway
    first.terminate()  # the late worker must be the only one
    assert await asyncio.to_thread(first.wait, 10) == 0
    private_redis.stop()
    late = spawn_worker()
    await asyncio.sleep(3)
    assert late.poll() is None  # no Redis, and still up
    private_redis.start()
    response = await client.post(f"/v1/tools/{name}.echo/jobs", json={"arguments": {"text": "back"}})
    for _ in range(50):  # the API's own connections come back too
        if response.status_code == 202:
            break
        await asyncio.sleep(0.2)
        response = await client.post(f"/v1/tools/{name}.echo/jobs", json={"arguments": {"text": "back"}})
    job = await _terminal(client, response.json()["job_id"], within_s=20)
    assert job["status"] == "completed", job
    assert late.poll() is None


async def _check(settings: Settings) -> int:
    """`python -m workers --check` against these settings' Redis."""
    env = {**worker_env(settings), "MCPQ_WORKER_DEAD_AFTER_S": DEAD_AFTER_S}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers", "--check", env=env, stdout=subprocess.DEVNULL
    )
    return await proc.wait()


async def test_result_survives_a_redis_outage(
    api: tuple[FastAPI, httpx.AsyncClient],
    spawn_worker: WorkerFactory,
    backends: Backends,
    private_redis: PrivateRedis,
    tmp_path: Path,
) -> None:
    _, client = api
    worker = spawn_worker()
    name = await _gateway(client, backends)
    key = uuid.uuid4().hex
    backends.gate(key)
    job_id = await _submit_running(client, name, "hold", {"key": key})
    assert await asyncio.to_thread(backends.gate(key).entered.wait, 10)  # the call reached the backend
    private_redis.stop()
    backends.gate(key).release()  # the call ends while Redis is away
    await asyncio.sleep(3)
    assert worker.poll() is None  # the worker rides the outage out
    private_redis.start()
    job = await _terminal(client, job_id, within_s=20)
    assert job["status"] == "completed", job
    assert job["attempts"] == 1
    assert worker.poll() is None
    log = (tmp_path / "worker0.log").read_text()
    assert f"result of job {job_id} kept until Redis is back" in log  # it was kept, not dropped
