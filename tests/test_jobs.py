"""Jobs: reading records, long-polling, progress, and cancellation (running, queued, finished)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from arq.constants import result_key_prefix
from fastapi import FastAPI
from sqlalchemy import update

from shared.config import Settings
from shared.jobs.schemas import JobKind
from shared.models import Gateway
from tests.backends import Backends, Gate, free_port
from tests.conftest import TEAM, instant
from tests.jobs_helpers import plant_record, store_of

JOB_FIELDS = {"id", "kind", "item", "team", "status", "created_at", "started_at", "finished_at", "attempts"}


async def _submit(client: httpx.AsyncClient, gateway: dict[str, Any], tool: str, **arguments: Any) -> str:
    response = await client.post(f"/v1/tools/{gateway['name']}.{tool}/jobs", json={"arguments": arguments})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def _eventually(check: Callable[[], Awaitable[bool]], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while True:
        if await check():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)


async def _entered(gate: Gate) -> None:
    assert await asyncio.to_thread(gate.entered.wait, 5), "the backend tool was never called"


@pytest.fixture
async def held(backends: Backends) -> AsyncIterator[tuple[str, Gate]]:
    """A gate key for the `hold` tool; released at the end whatever happened."""
    key = uuid.uuid4().hex
    gate = backends.gate(key)
    yield key, gate
    gate.release()


# --- reading jobs ---------------------------------------------------------------------------


async def test_completed_job_record(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    job_id = await _submit(client, gateway, "echo", text="hello")
    response = await client.get(f"/v1/jobs/{job_id}", params={"wait": 5})
    assert response.status_code == 200, response.text
    job = response.json()
    assert JOB_FIELDS <= set(job)
    assert job["id"] == job_id
    assert job["kind"] == "call_tool"
    assert job["item"] == f"{gateway['name']}.echo"
    assert job["status"] == "completed"
    assert job["attempts"] == 1
    assert job["result"]["content"] == [{"type": "text", "text": "hello"}]
    assert job["result"]["isError"] is False
    assert "error" not in job
    assert instant(job["created_at"]) <= instant(job["started_at"]) <= instant(job["finished_at"])
    assert job["created_at"].endswith("Z")


@pytest.mark.parametrize("job_id", ["0" * 32, uuid.uuid4().hex, "not-a-job"])
async def test_unknown_job_is_404(client: httpx.AsyncClient, job_id: str) -> None:
    response = await client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 404, response.text
    body = response.json()
    assert body["error"] == "not_found"
    assert job_id in body["detail"]


async def test_unknown_job_with_wait_is_404_at_once(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await client.get(f"/v1/jobs/{uuid.uuid4().hex}", params={"wait": 5})
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert time.monotonic() - started < 1


async def test_long_poll_returns_when_the_job_ends(
    client: httpx.AsyncClient, gateway: dict[str, Any]
) -> None:
    job_id = await _submit(client, gateway, "sleep", seconds=1)
    started = time.monotonic()
    response = await client.get(f"/v1/jobs/{job_id}", params={"wait": 10})
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "completed"
    assert job["result"]["content"] == [{"type": "text", "text": "slept 1.0"}]
    assert 0.5 < elapsed < 4


async def test_long_poll_times_out_with_the_running_record(
    client: httpx.AsyncClient, gateway: dict[str, Any], held: tuple[str, Gate]
) -> None:
    key, gate = held
    job_id = await _submit(client, gateway, "hold", key=key)
    await _entered(gate)
    started = time.monotonic()
    response = await client.get(f"/v1/jobs/{job_id}", params={"wait": 0.5})
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "running"
    assert job["started_at"] is not None
    assert job["finished_at"] is None
    assert "result" not in job
    assert 0.45 <= elapsed < 2

    gate.release()
    done = await client.get(f"/v1/jobs/{job_id}", params={"wait": 5})
    assert done.json()["status"] == "completed"
    assert done.json()["result"]["content"] == [{"type": "text", "text": f"released {key}"}]


async def test_get_without_wait_answers_immediately(
    client: httpx.AsyncClient, gateway: dict[str, Any], held: tuple[str, Gate]
) -> None:
    key, gate = held
    job_id = await _submit(client, gateway, "hold", key=key)
    await _entered(gate)
    started = time.monotonic()
    response = await client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200
    assert response.json()["status"] == "running"
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("wait", ["-1", "-0.1", "nan", "soon"])
async def test_invalid_wait_is_422(client: httpx.AsyncClient, wait: str) -> None:
    response = await client.get(f"/v1/jobs/{uuid.uuid4().hex}", params={"wait": wait})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    assert body["detail"].startswith("query/wait")


async def test_wait_above_maximum_is_422(client: httpx.AsyncClient, settings: Settings) -> None:
    response = await client.get(f"/v1/jobs/{uuid.uuid4().hex}", params={"wait": settings.max_wait_s + 1})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    assert str(settings.max_wait_s) in body["detail"]


async def test_progress_is_reported_while_running(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    job_id = await _submit(client, gateway, "sleep", seconds=1.5)
    progress: dict[str, Any] | None = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["status"] == "running" and "progress" in job:
            progress = job["progress"]
            break
        assert job["status"] in ("queued", "running"), job
        await asyncio.sleep(0.05)
    assert progress is not None, "no progress seen while the job ran"
    assert set(progress) == {"progress", "total", "message"}
    assert progress["total"] == max(1, int(1.5 / 0.1))  # the backend reports `steps` as total
    assert 0 <= progress["progress"] < progress["total"]
    assert progress["message"] == f"step {int(progress['progress'])}"

    done = (await client.get(f"/v1/jobs/{job_id}", params={"wait": 5})).json()
    assert done["status"] == "completed"


async def test_failed_job_shows_the_error(
    app: FastAPI, client: httpx.AsyncClient, backends: Backends, worker: Any
) -> None:
    name = f"down-{uuid.uuid4().hex[:8]}"
    created = await client.post(
        "/v1/gateways", json={"name": name, "url": backends.urls["stateless"], "team": TEAM}
    )
    assert created.status_code == 201, created.text
    gateway = created.json()
    try:
        # Point the stored gateway at a port nobody listens on: the next call cannot connect.
        async with app.state.ctx.session_factory() as s:
            await s.execute(
                update(Gateway)
                .where(Gateway.id == uuid.UUID(gateway["id"]))
                .values(url=f"http://127.0.0.1:{free_port()}/mcp")
            )
            await s.commit()
        job_id = await _submit(client, gateway, "echo", text="x")
        job = (await client.get(f"/v1/jobs/{job_id}", params={"wait": 10})).json()
        assert job["status"] == "failed", job
        assert job["error"]["type"] == "backend_unavailable"
        assert job["error"]["message"]
        assert "result" not in job
        assert job["finished_at"] is not None
    finally:
        await client.delete(f"/v1/gateways/{gateway['id']}")


# --- cancellation ---------------------------------------------------------------------------


async def _hold_waiters(backends: Backends, gate: Gate) -> int:
    """How many backend `hold` calls still wait on the gate (read in the backend's own loop)."""

    async def count() -> int:
        event = gate.release_event
        return 0 if event is None else len(event._waiters)  # type: ignore[attr-defined]

    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(count(), backends.loop))


async def test_cancel_running_job(
    client: httpx.AsyncClient, gateway: dict[str, Any], backends: Backends, held: tuple[str, Gate]
) -> None:
    key, gate = held
    job_id = await _submit(client, gateway, "hold", key=key)
    await _entered(gate)
    assert await _hold_waiters(backends, gate) == 1

    response = await client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["id"] == job_id
    assert job["status"] == "cancelled"
    assert job["error"]["type"] == "cancelled"
    assert job["finished_at"] is not None
    assert "result" not in job

    # The backend's call was cancelled too, not left running.
    async def backend_call_ended() -> bool:
        return await _hold_waiters(backends, gate) == 0

    assert await _eventually(backend_call_ended, 3)

    # Releasing the gate now cannot complete the job.
    gate.release()
    await asyncio.sleep(0.2)
    after = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert after["status"] == "cancelled"
    assert "result" not in after
    assert after["finished_at"] == job["finished_at"]


async def test_cancel_ends_a_waiting_sync_call_with_409(
    app: FastAPI,
    client: httpx.AsyncClient,
    gateway: dict[str, Any],
    settings: Settings,
    held: tuple[str, Gate],
) -> None:
    key, gate = held
    tool = f"{gateway['name']}.hold"
    call = asyncio.create_task(
        client.post(f"/v1/tools/{tool}/call", json={"arguments": {"key": key}, "timeout_s": 10})
    )
    try:
        await _entered(gate)
        redis: ArqRedis = app.state.ctx.queue.redis
        job_ids = []
        for raw_key in await redis.keys(settings.key("job", "*")):
            if (await redis.hget(raw_key, "item")) == tool.encode():
                job_ids.append((await redis.hget(raw_key, "id")).decode())
        assert len(job_ids) == 1
        cancelled = await client.delete(f"/v1/jobs/{job_ids[0]}")
        assert cancelled.status_code == 200, cancelled.text
        response = await asyncio.wait_for(call, 5)
    finally:
        call.cancel()
    assert response.status_code == 409, response.text
    assert response.json() == {
        "error": "cancelled",
        "detail": "cancelled on request",
        "job_id": job_ids[0],
        "status": "cancelled",
    }


async def test_cancel_completed_job_is_409(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    call = await client.post(f"/v1/tools/{gateway['name']}.echo/call", json={"arguments": {"text": "done"}})
    assert call.status_code == 200
    job_id = call.json()["job_id"]
    response = await client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["error"] == "conflict"
    assert job_id in body["detail"]
    after = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert after["status"] == "completed"
    assert after["result"]["content"] == [{"type": "text", "text": "done"}]


async def test_cancel_failed_job_is_409(
    client: httpx.AsyncClient, gateway: dict[str, Any], app: FastAPI, settings: Settings
) -> None:
    job_id = uuid.uuid4().hex
    store = store_of(app)
    await plant_record(
        app.state.ctx.queue.redis, settings, job_id, JobKind.CALL_TOOL.value, f"{gateway['name']}.echo"
    )
    assert await store.finish(job_id, {"ok": False, "error": {"type": "protocol_error", "message": "x"}})
    response = await client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "conflict"


async def test_cancel_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    job_id = uuid.uuid4().hex
    response = await client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "not_found"
    assert job_id in response.json()["detail"]


async def test_cancel_queued_record(client: httpx.AsyncClient, app: FastAPI, settings: Settings) -> None:
    """A job no worker has started yet is cancelled at once (record made through the store)."""
    job_id = uuid.uuid4().hex
    await plant_record(app.state.ctx.queue.redis, settings, job_id, JobKind.CALL_TOOL.value, "gw.echo")
    queued = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert queued["status"] == "queued"
    assert queued["started_at"] is None

    response = await client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "cancelled"
    assert job["error"] == {"type": "cancelled", "message": "cancelled on request"}
    assert job["started_at"] is None
    assert job["finished_at"] is not None
    assert job["attempts"] == 0

    # Nothing is left to cancel: 409, as for a completed or failed job.
    again = await client.delete(f"/v1/jobs/{job_id}")
    assert again.status_code == 409, again.text
    assert again.json() == {
        "error": "conflict",
        "detail": f"job {job_id} is already cancelled; nothing to cancel",
    }
    assert (await client.get(f"/v1/jobs/{job_id}")).json()["status"] == "cancelled"


async def test_cancelled_queued_job_never_reaches_the_backend(
    client: httpx.AsyncClient, app: FastAPI, gateway: dict[str, Any], backends: Backends, settings: Settings
) -> None:
    """Enqueued with a short deferral so it is certainly still queued when cancelled."""
    key = uuid.uuid4().hex
    job_id = uuid.uuid4().hex
    payload = {
        "job_id": job_id,
        "backend": {
            "gateway_id": gateway["id"],
            "gateway": gateway["name"],
            "url": gateway["url"],
            "transport": gateway["transport"],
            "headers_enc": "",
            "timeout_s": gateway["timeout_s"],
        },
        "tool": "count",
        "arguments": {"key": key},
        "retry_safe": False,
        "deadline": time.time() + 60,
    }
    redis: ArqRedis = app.state.ctx.queue.redis
    await plant_record(redis, settings, job_id, JobKind.CALL_TOOL.value, f"{gateway['name']}.count")
    job = await redis.enqueue_job(JobKind.CALL_TOOL.value, payload, _job_id=job_id, _defer_by=0.5)
    assert job is not None

    response = await client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"

    # Let the worker pick the deferred job up: it must skip it (arq then stores its result).
    async def worker_done() -> bool:
        return bool(await redis.exists(result_key_prefix + job_id))

    assert await _eventually(worker_done, 5)
    assert key not in backends.counters
    after = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert after["status"] == "cancelled"
    assert after["attempts"] == 0
    assert "result" not in after
