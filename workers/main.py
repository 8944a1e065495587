"""The worker process: `python -m workers` (see workers/__main__.py).

It never opens a database connection: jobs carry every value they need. `arq
workers.main.WorkerSettings` no longer runs it: arq's own Worker would pick jobs up its way,
without the claim that marks our job record running (see workers/worker.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket

from prometheus_client import start_http_server

from shared import runtime, tracing
from shared.config import Settings, get_settings
from shared.jobs.store import JobStore
from shared.redis import make_redis
from workers.worker import Worker

log = logging.getLogger("mcpq.worker")


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


async def serve(settings: Settings) -> int:
    """Run one worker until SIGTERM or SIGINT, then drain it (a second signal hurries it)."""
    serve_metrics(settings.worker_metrics_host, settings.worker_metrics_port)
    tracing.setup("mcpq-worker")
    worker = Worker(settings, make_redis(settings))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    try:
        await worker.async_run()
    finally:
        await worker.close()
        tracing.shutdown()
    return 0


async def check(settings: Settings) -> int:
    """Exit 0 if a worker on this host has beaten within `worker_dead_after_s` (health checks)."""
    redis = make_redis(settings)
    try:
        live = await JobStore(redis, settings).live_workers()
    finally:
        await redis.aclose()
    host = socket.gethostname()
    mine = [w for w in live if w.startswith(f"{host}:")]
    print(f"live workers on {host}: {len(mine)}")
    return 0 if mine else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers", description="Run an mcpq worker.")
    parser.add_argument("--check", action="store_true", help="exit 0 if a worker on this host is alive")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The HTTP clients log every request at INFO: a line per backend call is noise, and CPU.
    for chatty in ("httpx", "httpx2"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    settings = get_settings()
    with asyncio.Runner(loop_factory=runtime.new_event_loop) as runner:
        return runner.run(check(settings) if args.check else serve(settings))
