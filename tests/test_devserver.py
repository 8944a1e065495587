"""`make run` pieces: the port check of deploy/devserver.py and the demo backend, used as the
README's first session uses it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.backends import free_port
from tests.conftest import TEAM, unique
from workers.worker import Worker

REPO = Path(__file__).resolve().parent.parent


def test_a_second_make_run_stops_at_the_busy_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO),
            "MCPQ_PORT": str(port),
            "MCPQ_DEMO_PORT": "0",
        }
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "deploy.devserver"], cwd=tmp_path, env=env, capture_output=True, text=True
        )
    assert result.returncode != 0
    assert f"API port 127.0.0.1:{port} already in use" in result.stderr
    assert "mcpq is ready" not in result.stdout
    # It stopped before starting anything: no embedded servers, no data directory.
    assert time.monotonic() - started < 10
    assert not (tmp_path / ".mcpq-data").exists()


@pytest.fixture(scope="module")
def demo_backend() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "deploy.demo_backend", str(port)], cwd=REPO)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, "the demo backend exited"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert time.monotonic() < deadline, "the demo backend did not listen"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_the_demo_backend_as_a_first_gateway(
    client: httpx.AsyncClient, worker: Worker, demo_backend: str
) -> None:
    name = unique("demo")
    created = await client.post("/v1/gateways", json={"name": name, "url": demo_backend, "team": TEAM})
    assert created.status_code == 201, created.text
    gateway = created.json()
    assert (gateway["tool_count"], gateway["resource_count"], gateway["prompt_count"]) == (2, 1, 1)

    echoed = await client.post(f"/v1/tools/{name}.echo/call", json={"arguments": {"text": "hi"}})
    assert echoed.status_code == 200, echoed.text
    assert echoed.json()["result"]["structuredContent"] == {"result": "hi"}

    job = await client.post(f"/v1/tools/{name}.countdown/jobs", json={"arguments": {"seconds": 2}})
    assert job.status_code == 202, job.text
    done = await client.get(f"/v1/jobs/{job.json()['job_id']}", params={"wait": 15})
    body = done.json()
    assert body["status"] == "completed", body
    assert body["result"]["content"][0]["text"] == "counted down 2 s"
    assert body["progress"] == {"progress": 2.0, "total": 2.0, "message": "done"}

    read = await client.post(f"/v1/resources/{name}:demo://readme/read", json={})
    assert read.status_code == 200, read.text
    assert "demo backend" in read.json()["result"]["contents"][0]["text"]
    rendered = await client.post(f"/v1/prompts/{name}.greet/render", json={"arguments": {"name": "Ada"}})
    assert rendered.status_code == 200, rendered.text
    assert "Ada" in rendered.json()["result"]["messages"][0]["content"]["text"]
    assert (await client.delete(f"/v1/gateways/{gateway['id']}")).status_code == 204
    # The worker closes its session to the deleted gateway (and with it the listen stream the
    # 2026-07-28 demo backend holds open) before the fixture stops the backend: that teardown
    # blocks this event loop, the in-process worker's too.
    deadline = time.monotonic() + 5
    while REGISTRY.get_sample_value("mcpq_worker_mcp_sessions", {"gateway": name}):
        assert time.monotonic() < deadline, "the worker kept its session to the deleted gateway"
        await asyncio.sleep(0.05)
