"""The arq worker: `arq workers.main.WorkerSettings`.

It never opens a database connection: jobs carry every value they need.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from arq.connections import ArqRedis, RedisSettings
from arq.worker import func
from prometheus_client import start_http_server
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared import runtime
from shared.config import get_settings
from shared.gateways.breaker import Breaker
from shared.jobs.schemas import JobKind
from shared.jobs.store import JobStore
from shared.redis import job_deserializer, job_serializer, run_guarded, start_subscriber, stop_task
from shared.security import SecretBox
from workers import wake
from workers.breaker import GatewayHealth
from workers.sessions import SessionPool
from workers.tasks import call_tool, discover, get_prompt, read_resource

log = logging.getLogger("mcpq.worker")

wake.install()
# Here, because `arq workers.main.WorkerSettings` imports this module before it builds the loop.
runtime.use_uvloop()


async def startup(ctx: dict[str, Any]) -> None:
    # Tests run a worker in-process and hand it their own settings through ctx.
    settings = ctx.get("settings") or get_settings()
    # arq logs every job's arguments at INFO. Ours carry backend headers only encrypted, but
    # logs are no place for them either; our tasks log what matters (failures) themselves.
    logging.getLogger("arq.worker").setLevel(logging.WARNING)
    store = JobStore(ctx["redis"], settings)
    # Workers decrypt backend headers; without MCPQ_SECRET_KEYS they refuse to start.
    sessions = SessionPool(
        settings, SecretBox.from_settings(settings), GatewayHealth(Breaker(ctx["redis"], settings))
    )
    sessions.start()
    ctx.update(
        settings=settings,
        store=store,
        sessions=sessions,
        worker_id=f"{socket.gethostname()}:{os.getpid()}",
        in_flight=0,
    )
    serve_metrics(settings.worker_metrics_host, settings.worker_metrics_port)
    ctx["wake_listener"] = await start_subscriber(
        ctx["redis"], {store.wake_channel: lambda _: wake.wake()}, wake.wake
    )
    ctx["wake_tokens"] = asyncio.create_task(
        run_guarded("wake-tokens", lambda: take_wake_tokens(ctx["redis"], store.wake_list))
    )
    runtime.freeze_heap()


async def take_wake_tokens(redis: ArqRedis, wake_list: str) -> None:
    """Block on the wake list; each token (one per enqueued job) wakes this worker's poll."""
    while True:
        try:
            if await redis.blpop([wake_list], timeout=5) is not None:  # type: ignore[misc]
                wake.wake()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("wake list unavailable (%s); relying on the fallback poll", exc)
            await asyncio.sleep(1)


def serve_metrics(host: str, port: int) -> None:
    """Prometheus metrics on their own port, served from a thread by prometheus-client."""
    if port <= 0:
        return
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        # Several workers on one host: only the first gets the port. Say so; keep working.
        log.warning("worker metrics not served on %s:%s: %s", host, port, exc)
    else:
        log.info("worker metrics on http://%s:%s/metrics", host, port)


async def shutdown(ctx: dict[str, Any]) -> None:
    await stop_task(ctx.get("wake_listener"))
    await stop_task(ctx.get("wake_tokens"))
    sessions: SessionPool | None = ctx.get("sessions")
    if sessions is not None:
        await sessions.close()


async def job_ended(ctx: dict[str, Any]) -> None:
    # A job that ends on a full worker frees a slot: look for queued work now rather than at the
    # next fallback poll. (An exception here would kill arq's main loop; this cannot raise.)
    if ctx.get("in_flight", 0) >= ctx["settings"].worker_max_jobs - 1:
        wake.wake()


_settings = get_settings()


class WorkerSettings:
    functions = [
        func(call_tool, name=JobKind.CALL_TOOL.value, max_tries=3),
        func(discover, name=JobKind.DISCOVER.value, max_tries=2),
        func(read_resource, name=JobKind.READ_RESOURCE.value, max_tries=3),
        func(get_prompt, name=JobKind.GET_PROMPT.value, max_tries=3),
    ]
    on_startup = startup
    on_shutdown = shutdown
    after_job_end = job_ended
    job_serializer = job_serializer
    job_deserializer = job_deserializer
    allow_abort_jobs = True
    log_results = False
    redis_settings = RedisSettings.from_dsn(_settings.redis_url)
    queue_name = _settings.queue_name
    max_jobs = _settings.worker_max_jobs
    poll_delay = _settings.worker_fallback_poll_s
    job_timeout = int(_settings.max_backend_timeout_s + 30)  # JobStore.in_progress_ms relies on it
    keep_result = _settings.result_ttl_s
    # One health-check key per host (a container per replica), so `arq --check` in one container
    # cannot see another replica's beat, and a dead replica's key lapses within seconds.
    health_check_key = f"{_settings.queue_name}:health-check:{socket.gethostname()}"
    health_check_interval = 10
