"""Prometheus metrics. The API serves them at GET /metrics; each worker on its own port
(MCPQ_WORKER_METRICS_PORT). Gauges that describe a pool or a queue are read at scrape time."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Seconds, from a cache hit to a 10-minute backend call.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
)

# API side
CALLS = Counter(
    "mcpq_calls",
    "Tool calls, resource reads and prompt renders by how they ended, as the API answered them "
    "(mode: sync REST, async REST, mcp)",
    ["kind", "mode", "outcome"],
)
CALL_SECONDS = Histogram(
    "mcpq_call_seconds",
    "Awaited call time as the API sees it, request in to answer out",
    ["kind", "mode"],
    buckets=LATENCY_BUCKETS,
)
WAITING_REQUESTS = Gauge("mcpq_api_waiting_requests", "Requests awaiting a job result in this API process")
QUEUE_DEPTH = Gauge("mcpq_queue_depth", "Jobs in the queue not yet picked up by a worker")
BREAKER_OPEN = Gauge(
    "mcpq_gateway_breaker_open",
    "1 while a gateway's circuit is open (calls refused with 503), by gateway id; gateways without "
    "recent failures are absent",
    ["gateway_id"],
)
BREAKER_FAILURES = Gauge(
    "mcpq_gateway_breaker_failures",
    "Consecutive transport failures of calls to a gateway, by gateway id",
    ["gateway_id"],
)
DB_POOL_SIZE = Gauge("mcpq_db_pool_size", "SQLAlchemy pool size (connections kept)")
DB_POOL_CHECKED_OUT = Gauge("mcpq_db_pool_checked_out", "SQLAlchemy connections checked out right now")
DB_POOL_OVERFLOW = Gauge("mcpq_db_pool_overflow", "SQLAlchemy connections open beyond the pool size")

# Worker side
JOBS = Counter("mcpq_jobs", "Jobs a worker finished, by kind and outcome", ["kind", "outcome"])
QUEUE_WAIT_SECONDS = Histogram(
    "mcpq_job_queue_wait_seconds",
    "From enqueue to a worker starting the job",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
EXECUTION_SECONDS = Histogram(
    "mcpq_job_execution_seconds",
    "From a worker starting the job to its outcome",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
END_TO_END_SECONDS = Histogram(
    "mcpq_job_end_to_end_seconds", "From enqueue to the job's outcome", ["kind"], buckets=LATENCY_BUCKETS
)
JOBS_IN_FLIGHT = Gauge("mcpq_worker_jobs_in_flight", "Jobs this worker is running")
MCP_SESSIONS = Gauge("mcpq_worker_mcp_sessions", "Live pooled MCP sessions, by gateway", ["gateway"])
