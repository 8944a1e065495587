"""Two worker processes, 200 concurrent synchronous calls: every caller gets its own answer."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from shared.config import Settings
from tests.backends import Backends
from tests.conftest import TEAM, isolated, serve, worker_env
from tests.jobs_helpers import store_of

CALLS = 200
WORKERS = 2


@pytest.fixture(scope="module")
def own_queue(settings: Settings) -> Settings:
    # A queue of its own, so the in-process worker of other tests cannot take these jobs.
    return isolated(settings)


@pytest.fixture(scope="module")
def worker_processes(own_queue: Settings) -> Iterator[list[subprocess.Popen[bytes]]]:
    # max_jobs below CALLS: neither process can take every job, so both must serve.
    env = {**worker_env(own_queue), "MCPQ_WORKER_MAX_JOBS": str(CALLS * 3 // 4)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "workers"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(WORKERS)
    ]
    yield procs
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
async def procs_client(
    own_queue: Settings, client: httpx.AsyncClient
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    # `client` is asked for so that the shared test team exists in the database.
    async with serve(own_queue) as served:
        yield served


async def test_200_concurrent_calls_on_two_worker_processes(
    procs_client: tuple[FastAPI, httpx.AsyncClient],
    worker_processes: list[subprocess.Popen[bytes]],
    backends: Backends,
) -> None:
    app, client = procs_client
    name = f"procs-{uuid.uuid4().hex[:6]}"
    created = await client.post(
        "/v1/gateways", json={"name": name, "url": backends.urls["stateless"], "team": TEAM}
    )
    assert created.status_code == 201, created.text

    async def call(i: int) -> tuple[str, httpx.Response]:
        text = f"caller-{i}-{uuid.uuid4().hex}"
        response = await client.post(
            f"/v1/tools/{name}.delayed_echo/call",
            json={"arguments": {"text": text, "seconds": 0.3}, "timeout_s": 60},
        )
        return text, response

    results = await asyncio.gather(*(call(i) for i in range(CALLS)))
    for proc in worker_processes:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "worker exited"

    served_by: set[str] = set()
    for text, response in results:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["result"]["content"][0]["text"] == text
        assert body["result"]["structuredContent"] == {"result": text}
        record = await store_of(app).get(body["job_id"])
        assert record is not None and record.worker is not None
        served_by.add(record.worker)
    assert len(served_by) == WORKERS, served_by
    await client.delete(f"/v1/gateways/{created.json()['id']}")
