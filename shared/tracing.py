"""OpenTelemetry traces: one trace per call, from the API request through the queue and the worker
to the backend.

On only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set:
`setup` then installs an SDK tracer provider with an OTLP/HTTP exporter, named by
`OTEL_SERVICE_NAME` (else the process's own name). Off, the tracer is the API's no-op tracer and
every helper here returns at its first line: no span, no context, no `traceparent` anywhere.

The W3C trace context (`traceparent`, `tracestate`) travels as plain strings: in the job payload
(`payload["trace"]`), in the backend request's `_meta` (SEP-414), and from there in its HTTP
`traceparent` header (workers/backend_http.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# The keys of a W3C trace context, as they travel in payloads, `_meta` and HTTP headers.
TRACE_KEYS = ("traceparent", "tracestate")

_propagator = TraceContextTextMapPropagator()
_tracer: Tracer = trace.NoOpTracer()
_provider: TracerProvider | None = None
# The provider `setup` made (and `shutdown` flushes); a test's own provider is the test's to end.
_exporting: TracerProvider | None = None
# What `span` returns when tracing is off: one shared, reusable do-nothing block.
_OFF: AbstractContextManager[None] = nullcontext()


def setup(service_name: str) -> bool:
    """Export traces over OTLP if the environment asks for it; True if it does. Called once per
    process (API lifespan start, worker start); without an endpoint nothing is set up."""
    global _exporting
    if _exporting is not None:
        return True  # already exporting: one provider per process
    if not any(os.environ.get(var) for var in ENDPOINT_VARS):
        return False
    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    # Batched: spans leave in the background, never on the request's path.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _exporting = provider
    use_provider(provider)
    return True


def use_provider(provider: TracerProvider | None) -> None:
    """Trace to `provider` (None: tracing off). `setup` calls this; tests pass a provider with an
    in-memory exporter. Kept in this module rather than the API's global provider, which can be set
    only once per process."""
    global _tracer, _provider
    _provider = provider
    _tracer = trace.NoOpTracer() if provider is None else provider.get_tracer("mcpq")


def shutdown() -> None:
    """Send the spans still batched (process exit)."""
    global _exporting
    if _exporting is not None:
        _exporting.shutdown()
        if _provider is _exporting:
            use_provider(None)
        _exporting = None


def enabled() -> bool:
    return _provider is not None


def context_of(carrier: Mapping[str, object] | None) -> Context | None:
    """The trace context a carrier (payload field, `_meta`, headers) holds; None if it holds none."""
    if not carrier or not isinstance(carrier.get("traceparent"), str):
        return None
    return _propagator.extract({key: str(carrier[key]) for key in TRACE_KEYS if key in carrier})


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Mapping[str, object] | None = None,
    attributes: Mapping[str, str | int | float | bool] | None = None,
    start_time: float | None = None,
) -> AbstractContextManager[Span | None]:
    """A span made current for the block (None when tracing is off). Its parent is the trace
    context in `parent` if that holds one, else the current span. `start_time` is epoch seconds."""
    if _provider is None:
        return _OFF
    started = None if start_time is None else int(start_time * 1e9)
    return _tracer.start_as_current_span(
        name, context=context_of(parent), kind=kind, attributes=attributes, start_time=started
    )


def record_interval(name: str, start: float, end: float, attributes: Mapping[str, str | int | float]) -> None:
    """A finished child span of the current one, from `start` to `end` (epoch seconds): a wait that
    happened before anyone could time it, such as a job's time in the queue."""
    if _provider is None:
        return
    interval = _tracer.start_span(name, attributes=attributes, start_time=int(start * 1e9))
    interval.end(end_time=int(end * 1e9))


def carrier() -> dict[str, str] | None:
    """The current span's context as `traceparent`/`tracestate` strings; None unless a span is
    recording (so nothing is added when tracing is off or the call is not sampled)."""
    if _provider is None or not trace.get_current_span().is_recording():
        return None
    found: dict[str, str] = {}
    _propagator.inject(found)
    return found
