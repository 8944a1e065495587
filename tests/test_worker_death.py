"""A worker that stops mid-call: its job is handed on at once and still ends in a state.

Also checks that a running job does not sit in the poll range of arq's queue (see _CLAIM in
shared/jobs/store.py), which is what keeps thousands of slow calls from swamping the workers.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from arq.utils import timestamp_ms
from fastapi import FastAPI

from shared.config import Settings
from tests.backends import Backends
from tests.conftest import TEAM, isolated, serve, worker_env

WorkerFactory = Callable[[], subprocess.Popen[bytes]]


@pytest.fixture(scope="module")
def own_queue(settings: Settings) -> Settings:
    # A queue of its own, so the in-process worker of other tests cannot take these jobs.
    return isolated(settings)


@pytest.fixture
def spawn_worker(own_queue: Settings) -> Iterator[WorkerFactory]:
    procs: list[subprocess.Popen[bytes]] = []

    def spawn() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers"],
            # A drain shorter than the held call: SIGTERM hands it back after 0.5 s.
            env={**worker_env(own_queue), "MCPQ_WORKER_METRICS_PORT": "0", "MCPQ_WORKER_DRAIN_S": "0.5"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="module")
async def api(
    own_queue: Settings, client: httpx.AsyncClient
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    # `client` is asked for so that the shared test team exists in the database.
    async with serve(own_queue) as served:
        yield served


async def _gateway(client: httpx.AsyncClient, backends: Backends) -> str:
    name = f"death-{uuid.uuid4().hex[:6]}"
    created = await client.post(
        "/v1/gateways", json={"name": name, "url": backends.urls["stateful"], "team": TEAM}
    )
    assert created.status_code == 201, created.text
    return name


async def _running(client: httpx.AsyncClient, job_id: str) -> None:
    for _ in range(100):
        if (await client.get(f"/v1/jobs/{job_id}")).json()["status"] == "running":
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the job never started")


async def test_running_job_leaves_the_poll_range(
    api: tuple[FastAPI, httpx.AsyncClient], spawn_worker: WorkerFactory, backends: Backends
) -> None:
    app, client = api
    spawn_worker()
    name = await _gateway(client, backends)
    key = uuid.uuid4().hex
    backends.gate(key)
    job = (await client.post(f"/v1/tools/{name}.hold/jobs", json={"arguments": {"key": key}})).json()
    assert await asyncio.to_thread(backends.gate(key).entered.wait, 10)
    queue = app.state.ctx.settings.queue_name
    score = await app.state.ctx.queue.redis.zscore(queue, job["job_id"])
    assert score is not None and score > timestamp_ms() + 60_000  # still arq's, but not due
    assert await app.state.ctx.queue.depth() == 0
    backends.gate(key).release()
    done = (await client.get(f"/v1/jobs/{job['job_id']}", params={"wait": 10})).json()
    assert done["status"] == "completed"
    # arq drops the id from its queue right after our function returns (just after the push).
    for _ in range(50):
        if await app.state.ctx.queue.redis.zscore(queue, job["job_id"]) is None:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("arq never removed the finished job from its queue")


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("hold", {"key": "set-below"}, "failed"),  # not idempotent: may have run, so not again
        ("sleep", {"seconds": 1.5}, "completed"),  # idempotentHint: run again on the next worker
    ],
)
async def test_sigterm_mid_call_hands_the_job_on(
    api: tuple[FastAPI, httpx.AsyncClient],
    spawn_worker: WorkerFactory,
    backends: Backends,
    tool: str,
    arguments: dict[str, object],
    expected: str,
) -> None:
    _, client = api
    first = spawn_worker()
    name = await _gateway(client, backends)
    if tool == "hold":
        arguments = {"key": uuid.uuid4().hex}
        backends.gate(str(arguments["key"]))
    job_id = (await client.post(f"/v1/tools/{name}.{tool}/jobs", json={"arguments": arguments})).json()[
        "job_id"
    ]
    await _running(client, job_id)
    await asyncio.sleep(0.3)
    spawn_worker()  # the replacement
    first.send_signal(signal.SIGTERM)
    started = time.monotonic()
    job = (await client.get(f"/v1/jobs/{job_id}", params={"wait": 20})).json()
    assert time.monotonic() - started < 15  # handed on at once, not after arq's in-progress lock
    assert job["status"] == expected, job
    assert job["attempts"] == 2
    if expected == "failed":
        assert job["error"]["type"] == "worker_lost"
        backends.gate(str(arguments["key"])).release()
    assert first.wait(10) is not None
