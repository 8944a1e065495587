"""Unit tests that call the worker's task functions directly, with a real Redis and real backends."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from shared.config import Settings
from shared.jobs.schemas import BackendSpec, CallToolPayload, DiscoverPayload, Envelope, JobStatus
from shared.jobs.store import Claim, JobStore
from shared.redis import make_redis
from shared.security import SecretBox
from shared.subscriptions import SubscriptionStore
from tests.backends import Backends, free_port
from tests.jobs_helpers import plant_record
from workers.progress import ProgressWriter
from workers.sessions import SessionPool
from workers.state import WorkerState
from workers.subscriptions import SubscriptionHolder
from workers.tasks import call_tool, discover


def holder(settings: Settings, store: JobStore, sessions: SessionPool) -> SubscriptionHolder:
    return SubscriptionHolder(
        SubscriptionStore(store.redis, settings), store, sessions, settings, "unit-test"
    )


JobFunction = Callable[[dict[str, Any], Any], Awaitable[Envelope]]


@pytest.fixture
async def state(settings: Settings) -> AsyncIterator[WorkerState]:
    redis = make_redis(settings)
    sessions = SessionPool(settings, SecretBox.from_settings(settings))
    store = JobStore(redis, settings)
    yield WorkerState(
        settings, store, sessions, "unit-test", ProgressWriter(store), holder(settings, store, sessions)
    )
    await sessions.close()
    await redis.aclose()


def claimed(job_id: str, previous: str = "queued", attempts: int = 1) -> Claim:
    """What the worker's claim reports (tests/test_worker_claim.py covers the claim itself)."""
    return Claim(job_id, None, attempts, False, previous, attempts, time.time())


async def run_job(
    state: WorkerState, function: JobFunction, payload: Any, previous: str = "queued", attempts: int = 1
) -> Envelope:
    """Run a job function as the worker does once it has claimed the job, and record its end."""
    job_id = payload["job_id"]
    envelope = await function({"state": state, "claim": claimed(job_id, previous, attempts)}, payload)
    await state.store.finish(job_id, envelope)
    return envelope


def spec(url: str, transport: str = "streamable_http", timeout_s: float = 10) -> BackendSpec:
    return {
        "gateway_id": str(uuid.uuid5(uuid.NAMESPACE_URL, url)),
        "gateway": "unit",
        "url": url,
        "transport": transport,
        "headers_enc": "",
        "timeout_s": timeout_s,
    }


async def run_call(
    state: WorkerState,
    backend: BackendSpec,
    tool: str,
    arguments: dict[str, Any],
    *,
    retry_safe: bool = False,
    deadline: float | None = None,
) -> tuple[dict[str, Any], Any]:
    job_id = uuid.uuid4().hex
    await plant_record(state.store.redis, state.settings, job_id, "call_tool", f"unit.{tool}")
    payload: CallToolPayload = {
        "job_id": job_id,
        "backend": backend,
        "tool": tool,
        "arguments": arguments,
        "retry_safe": retry_safe,
        "deadline": deadline if deadline is not None else time.time() + 60,
    }
    envelope = await run_job(state, call_tool, payload)
    return dict(envelope), await state.store.get(job_id)


async def test_call_records_result(state: WorkerState, backends: Backends) -> None:
    envelope, record = await run_call(state, spec(backends.urls["stateful"]), "add", {"a": 2, "b": 3})
    assert envelope["ok"] is True
    assert envelope["result"]["structuredContent"] == {"result": 5}
    assert record.status is JobStatus.COMPLETED and record.result == envelope["result"]


async def test_session_is_reused_and_reconnected_after_expiry(state: WorkerState, backends: Backends) -> None:
    legacy = backends.legacy
    backend = spec(backends.urls["legacy"])
    before = legacy.initializations
    for i in range(5):
        envelope, _ = await run_call(state, backend, "echo", {"text": str(i)})
        assert envelope["result"]["content"][0]["text"] == f"legacy:{i}"
    assert legacy.initializations == before + 1, "one session should serve every call"
    assert state.sessions.open_sessions == 1

    legacy.expire_sessions()  # the server now answers 404 to the old Mcp-Session-Id
    envelope, _ = await run_call(state, backend, "echo", {"text": "again"})
    assert envelope["ok"] is True, envelope
    assert envelope["result"]["content"][0]["text"] == "legacy:again"
    assert legacy.initializations == before + 2


async def test_unreachable_backend_fails_cleanly(state: WorkerState) -> None:
    envelope, record = await run_call(
        state, spec(f"http://127.0.0.1:{free_port()}/mcp"), "echo", {"text": "x"}
    )
    assert envelope["ok"] is False
    assert envelope["error"]["type"] == "backend_unavailable"
    assert record.status is JobStatus.FAILED and record.error == envelope["error"]


async def test_backend_timeout(state: WorkerState, backends: Backends) -> None:
    backend = spec(backends.urls["stateful"], timeout_s=0.3)
    started = time.monotonic()
    envelope, record = await run_call(state, backend, "sleep", {"seconds": 3})
    assert time.monotonic() - started < 2.5
    assert envelope["error"]["type"] == "timeout"
    assert record.status is JobStatus.FAILED


async def test_redelivered_call_is_not_rerun_unless_retry_safe(
    state: WorkerState, backends: Backends
) -> None:
    store: JobStore = state.store
    backend = spec(backends.urls["stateful"])
    key = uuid.uuid4().hex
    for retry_safe, expected in ((False, JobStatus.FAILED), (True, JobStatus.COMPLETED)):
        job_id = uuid.uuid4().hex
        await plant_record(state.store.redis, state.settings, job_id, "call_tool", "unit.count")
        payload: CallToolPayload = {
            "job_id": job_id,
            "backend": backend,
            "tool": "count",
            "arguments": {"key": key},
            "retry_safe": retry_safe,
            "deadline": time.time() + 60,
        }
        # Attempt 1 began, then its worker vanished: attempt 2 finds the record running.
        envelope = await run_job(state, call_tool, payload, previous="running", attempts=2)
        record = await store.get(job_id)
        assert record is not None and record.status is expected
        if not retry_safe:
            assert envelope["error"]["type"] == "worker_lost"
    assert backends.counters[key] == 1  # only the retry-safe one reached the backend


async def test_job_past_its_deadline_is_not_run(state: WorkerState, backends: Backends) -> None:
    key = uuid.uuid4().hex
    envelope, record = await run_call(
        state, spec(backends.urls["stateful"]), "count", {"key": key}, deadline=time.time() - 1
    )
    assert envelope["error"]["type"] == "expired"
    assert record.status is JobStatus.FAILED
    assert key not in backends.counters


async def test_job_cancelled_while_queued_is_skipped(state: WorkerState, backends: Backends) -> None:
    store: JobStore = state.store
    job_id = uuid.uuid4().hex
    key = uuid.uuid4().hex
    await plant_record(state.store.redis, state.settings, job_id, "call_tool", "unit.count")
    assert await store.request_cancel(job_id) == "cancelled"
    payload: CallToolPayload = {
        "job_id": job_id,
        "backend": spec(backends.urls["stateful"]),
        "tool": "count",
        "arguments": {"key": key},
        "retry_safe": False,
        "deadline": time.time() + 60,
    }
    envelope = await run_job(state, call_tool, payload, previous="cancelled")
    assert envelope["error"]["type"] == "skipped"
    record = await store.get(job_id)
    assert record is not None and record.status is JobStatus.CANCELLED
    assert key not in backends.counters


@pytest.mark.parametrize("kind", ["stateful", "stateless", "sse"])
async def test_discover_lists_the_catalog(state: WorkerState, backends: Backends, kind: str) -> None:
    transport = "sse" if kind == "sse" else "streamable_http"
    job_id = uuid.uuid4().hex
    await plant_record(state.store.redis, state.settings, job_id, "discover", "unit (discovery)")
    payload: DiscoverPayload = {
        "job_id": job_id,
        "backend": spec(backends.urls[kind], transport),
        "deadline": time.time() + 60,
    }
    envelope = await run_job(state, discover, payload)
    assert envelope["ok"] is True, envelope
    catalog = envelope["result"]
    assert {"echo", "add", "sleep", "hold"} <= {t["name"] for t in catalog["tools"]}
    assert sorted(r["uri"] for r in catalog["resources"]) == [
        "demo://logo.png",
        "demo://readme",
        "test://watched-resource",
    ]
    assert [r["uriTemplate"] for r in catalog["resource_templates"]] == ["demo://items/{item}"]
    assert [p["name"] for p in catalog["prompts"]] == ["greet"]
    assert catalog["server"]["name"] == "mcpq-test-backend"
    assert catalog["protocol_version"]


async def test_discover_legacy_backend(state: WorkerState, backends: Backends) -> None:
    job_id = uuid.uuid4().hex
    await plant_record(state.store.redis, state.settings, job_id, "discover", "unit (discovery)")
    payload = {"job_id": job_id, "backend": spec(backends.urls["legacy"]), "deadline": time.time() + 60}
    envelope = await run_job(state, discover, payload)
    assert envelope["ok"] is True, envelope
    assert envelope["result"]["protocol_version"] == "2025-06-18"
    assert [t["name"] for t in envelope["result"]["tools"]] == ["echo"]
    assert envelope["result"]["resources"] == [] and envelope["result"]["prompts"] == []


async def test_handshake_era_backend_negotiates_2025_11_25(state: WorkerState, backends: Backends) -> None:
    job_id = uuid.uuid4().hex
    await plant_record(state.store.redis, state.settings, job_id, "discover", "unit (discovery)")
    backend = spec(backends.urls["handshake"])
    envelope = await run_job(
        state, discover, {"job_id": job_id, "backend": backend, "deadline": time.time() + 60}
    )
    assert envelope["ok"] is True, envelope
    assert envelope["result"]["protocol_version"] == "2025-11-25"
    for i in range(3):
        call, _ = await run_call(state, backend, "echo", {"text": f"h{i}"})
        assert call["result"]["content"][0]["text"] == f"h{i}"
    assert state.sessions.open_sessions == 1


async def test_busy_backend_gets_more_sessions_up_to_the_cap(settings: Settings, backends: Backends) -> None:
    narrow = settings.model_copy(update={"mcp_session_max_calls": 2, "mcp_max_sessions_per_backend": 3})
    redis = make_redis(narrow)
    sessions = SessionPool(narrow, SecretBox.from_settings(narrow))
    store = JobStore(redis, narrow)
    state = WorkerState(
        narrow, store, sessions, "unit-test", ProgressWriter(store), holder(narrow, store, sessions)
    )
    keys = [uuid.uuid4().hex for _ in range(8)]
    for key in keys:
        backends.gate(key)
    try:
        calls = [
            asyncio.create_task(run_call(state, spec(backends.urls["stateless"]), "hold", {"key": key}))
            for key in keys
        ]
        for key in keys:
            assert await asyncio.to_thread(backends.gate(key).entered.wait, 10)
        # 8 calls, 2 per session, at most 3 sessions: the cap holds and the rest share.
        assert sessions.open_sessions == 3
        for key in keys:
            backends.gate(key).release()
        results = await asyncio.gather(*calls)
        assert all(envelope["ok"] for envelope, _ in results)
    finally:
        await sessions.close()
        await redis.aclose()
