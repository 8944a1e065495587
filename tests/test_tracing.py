"""Traces: one trace from the caller's `traceparent` through the API, the queue and the worker to
the backend, which reports the `traceparent` it received (header and `_meta`). Spans are captured
in-process with the SDK's in-memory exporter (API, in-process worker and backend share the
process); with tracing off, nothing carries a trace context."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, cast

import httpx
import httpx2
import pytest
from arq.jobs import Job
from fastapi import FastAPI
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import RequestParamsMeta
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared import tracing
from shared.config import Settings
from shared.jobs.queue import JobQueue
from shared.redis import job_deserializer
from tests.backends import Backends, serving
from tests.conftest import isolated, unique
from tests.test_push import echo_job, job_queue

# The caller's own trace context, as a client that traces sends it.
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, into memory; off again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.use_provider(None)
        provider.shutdown()


@pytest.fixture
async def idle_queue(settings: Settings) -> AsyncIterator[JobQueue]:
    """A queue of its own that no worker serves: a submitted job stays as it was stored."""
    async with job_queue(isolated(settings)) as queue:
        yield queue


def one_named(found: list[ReadableSpan], name: str) -> ReadableSpan:
    named = [s for s in found if s.name == name]
    assert len(named) == 1, (name, [s.name for s in found])
    return named[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def stored_payload(queue: JobQueue, job_id: str) -> dict[str, Any]:
    info = await Job(
        job_id, queue.redis, _queue_name=queue.settings.queue_name, _deserializer=job_deserializer
    ).info()
    assert info is not None
    payload: dict[str, Any] = info.args[0]
    return payload


async def call_trace_context(client: httpx.AsyncClient, gateway: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(
        f"/v1/tools/{gateway['name']}.trace_context/call",
        json={"arguments": {}},
        headers={"traceparent": CLIENT_TRACEPARENT},
    )
    assert response.status_code == 200, response.text
    received: dict[str, Any] = response.json()["result"]["structuredContent"]
    return received


async def test_one_trace_links_the_request_the_worker_and_the_backend(
    client: httpx.AsyncClient, gateway: dict[str, Any], spans: InMemorySpanExporter
) -> None:
    received = await call_trace_context(client, gateway)

    trace = [s for s in spans.get_finished_spans() if f"{s.context.trace_id:032x}" == CLIENT_TRACE]
    request = one_named(trace, f"POST /v1/tools/{gateway['name']}.trace_context/call")
    enqueue = one_named(trace, "mcpq.enqueue")
    run = one_named(trace, "mcpq.run call_tool")
    queue_wait = one_named(trace, "mcpq.queue_wait")
    backend_call = one_named(trace, "tools/call trace_context")
    # The caller's trace is continued: the API's request span is the child of the caller's span.
    assert parent_of(request) == int(CLIENT_SPAN, 16) and request.kind is SpanKind.SERVER
    assert parent_of(enqueue) == request.context.span_id
    # The worker's run continues the context that travelled in the job payload.
    assert parent_of(run) == enqueue.context.span_id and run.kind is SpanKind.CONSUMER
    assert parent_of(queue_wait) == run.context.span_id
    assert queue_wait.end_time is not None and run.start_time is not None
    assert queue_wait.end_time <= run.start_time + 1_000_000  # the wait ends when the run starts
    assert parent_of(backend_call) == run.context.span_id and backend_call.kind is SpanKind.CLIENT
    # The backend received the worker's backend-call span as its parent, in both places.
    assert received["header"] == received["meta"]
    _, trace_id, parent_id, _ = received["header"].split("-")
    assert (trace_id, parent_id) == (CLIENT_TRACE, f"{backend_call.context.span_id:016x}")


async def test_an_mcp_client_meta_traceparent_is_continued(
    app: FastAPI, client: httpx.AsyncClient, gateway: dict[str, Any], spans: InMemorySpanExporter
) -> None:
    """On the MCP front door the caller's context comes in the request's `_meta` (SEP-414)."""
    team = gateway["team_id"]
    created = await client.post(
        "/v1/servers",
        json={"name": unique("traced"), "team": team, "tools": [f"{gateway['name']}.trace_context"]},
    )
    assert created.status_code == 201, created.text
    minted = await client.post("/v1/tokens", json={"name": unique("t"), "team": team, "role": "member"})
    # A real socket: the SDK client speaks streamable HTTP (SSE bodies) to the app, already started.
    try:
        async with serving(app, lifespan="off") as base:
            headers = {"Authorization": f"Bearer {minted.json()['token']}"}
            url = f"{base}{created.json()['mcp_path']}"
            async with (
                httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=None)) as http,
                Client(streamable_http_client(url, http_client=http)) as mcp,
            ):
                # `_meta` is an open map (extra_items=Any): `traceparent` is one of its extra items.
                meta = cast(RequestParamsMeta, {"traceparent": CLIENT_TRACEPARENT})
                result = await mcp.call_tool("trace_context", {}, meta=meta)
    finally:
        await client.delete(f"/v1/servers/{created.json()['id']}")
    received = result.structured_content
    assert received is not None

    trace = [s for s in spans.get_finished_spans() if f"{s.context.trace_id:032x}" == CLIENT_TRACE]
    calls = [s for s in trace if s.name == "tools/call trace_context"]
    [front_door] = [s for s in calls if s.kind is SpanKind.SERVER]
    [backend_call] = [s for s in calls if s.kind is SpanKind.CLIENT]
    assert parent_of(front_door) == int(CLIENT_SPAN, 16)
    run = one_named(trace, "mcpq.run call_tool")
    assert parent_of(one_named(trace, "mcpq.enqueue")) == front_door.context.span_id
    assert parent_of(backend_call) == run.context.span_id
    _, trace_id, parent_id, _ = str(received["meta"]).split("-")
    assert (trace_id, parent_id) == (CLIENT_TRACE, f"{backend_call.context.span_id:016x}")
    assert received["header"] == received["meta"]


async def test_the_job_payload_carries_the_enqueue_span(
    idle_queue: JobQueue, backends: Backends, spans: InMemorySpanExporter
) -> None:
    job = echo_job(backends, "traced")
    with tracing.span("caller"):
        await idle_queue.submit(job)
    enqueue = one_named(list(spans.get_finished_spans()), "mcpq.enqueue")
    stored = await stored_payload(idle_queue, job.id)
    _, trace_id, span_id, _ = stored["trace"]["traceparent"].split("-")
    assert (trace_id, span_id) == (f"{enqueue.context.trace_id:032x}", f"{enqueue.context.span_id:016x}")


async def test_off_nothing_carries_a_trace_context(
    client: httpx.AsyncClient, gateway: dict[str, Any], idle_queue: JobQueue, backends: Backends
) -> None:
    assert not tracing.enabled()
    # The caller's traceparent is not forwarded either: without tracing the API starts no span.
    assert await call_trace_context(client, gateway) == {"header": None, "meta": None}
    job = echo_job(backends, "untraced")
    await idle_queue.submit(job)
    assert "trace" not in await stored_payload(idle_queue, job.id)


class Receiver(BaseHTTPRequestHandler):
    """A stand-in OTLP/HTTP collector: keeps what it was sent."""

    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_the_environment_switches_otlp_export_on(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (*tracing.ENDPOINT_VARS, "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(var, raising=False)
    assert not tracing.setup("mcpq-test") and not tracing.enabled()

    collector = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_address[1]}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "mcpq-from-env")
    try:
        assert tracing.setup("mcpq-test") and tracing.enabled()
        with tracing.span("exported"):
            assert tracing.carrier() is not None
    finally:
        tracing.shutdown()  # flushes the batch, and tracing is off again
        collector.shutdown()
        collector.server_close()
    assert not tracing.enabled()
    [(path, body)] = Receiver.received
    assert path == "/v1/traces"
    assert b"exported" in body and b"mcpq-from-env" in body
