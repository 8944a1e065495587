"""CPU per call of the worker's MCP client path alone: `workers.sessions.SessionPool` (the SDK,
httpx2 and our transport) in one process, calling the benchmark backend concurrently.

It prices what the load runs cannot separate: the MCP client's share of a worker's CPU, and
what a long call, its progress notifications and the number of calls in flight add to it. CPU
is this process's own (`time.process_time`), so other load on the machine slows the run but
changes the figure less than it changes wall-clock numbers. The backend's CPU per call is read
from /proc.

    python bench/client_cost.py --tool echo --concurrency 200 --calls 1200
    python bench/client_cost.py --seconds 3 --concurrency 200 --calls 1200   # 3 progress notifications
    python bench/client_cost.py --seconds 5 --concurrency 1000 --calls 2000 --session-calls 16

It starts its own backend (bench/backend.py) on a free loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import uvloop
from cryptography.fernet import Fernet
from mcp import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._harness import BACKEND, cpu_seconds, free_port, raise_open_files_limit, wait_port
from shared.config import Settings
from shared.jobs.schemas import BackendSpec
from shared.security import SecretBox
from workers.sessions import SessionPool


async def measure(args: argparse.Namespace, url: str, backend_pid: int) -> str:
    settings = Settings(
        secret_keys=Fernet.generate_key().decode(),
        allowed_backend_networks="127.0.0.1/32",
        worker_max_jobs=args.concurrency + 10,
        mcp_session_max_calls=args.session_calls,
    )
    pool = SessionPool(settings, SecretBox.from_settings(settings))
    spec: BackendSpec = {
        "gateway_id": "bench",
        "gateway": "bench",
        "url": url,
        "transport": "streamable_http",
        "headers_enc": "",
        "timeout_s": 120.0,
    }
    notifications = 0

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        nonlocal notifications
        notifications += 1

    tool, arguments = ("echo", {"text": "hi"}) if args.seconds == 0 else ("sleep", {"seconds": args.seconds})

    async def call(client: Client) -> Any:
        return await client.call_tool(
            tool, arguments, read_timeout_seconds=120, progress_callback=on_progress
        )

    # Warm up: open the sessions the run will use, outside the measurement.
    await asyncio.gather(*(pool.use(spec, call) for _ in range(args.concurrency)))
    notifications = 0
    left = args.calls
    latencies: list[float] = []

    async def user() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.monotonic()
            await pool.use(spec, call)
            latencies.append(time.monotonic() - started)

    backend_before = cpu_seconds(backend_pid) or 0.0
    cpu_before, wall_before = time.process_time(), time.monotonic()
    await asyncio.gather(*(user() for _ in range(args.concurrency)))
    cpu, wall = time.process_time() - cpu_before, time.monotonic() - wall_before
    backend = (cpu_seconds(backend_pid) or 0.0) - backend_before
    sessions = pool.open_sessions
    await pool.close()
    latencies.sort()
    return (
        f"{tool}({args.seconds:g} s) x {args.calls} at {args.concurrency} concurrent, {sessions} sessions "
        f"({args.session_calls} calls each): client CPU {1000 * cpu / args.calls:.2f} ms/call, backend CPU "
        f"{1000 * backend / args.calls:.2f} ms/call, {notifications / args.calls:.1f} progress "
        f"notifications/call, {args.calls / wall:.0f} calls/s, p50 {latencies[len(latencies) // 2]:.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tool", choices=["echo", "sleep"], default="sleep")
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="the sleep tool's seconds (a progress notification each)"
    )
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--calls", type=int, default=1200)
    parser.add_argument("--session-calls", type=int, default=16, help="MCPQ_MCP_SESSION_MAX_CALLS")
    args = parser.parse_args()
    if args.tool == "echo":
        args.seconds = 0.0
    raise_open_files_limit()
    port = free_port()
    backend = subprocess.Popen(
        [sys.executable, str(BACKEND), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port, proc=backend)
        print(uvloop.run(measure(args, f"http://127.0.0.1:{port}/mcp", backend.pid)))
    finally:
        backend.terminate()
        backend.wait(10)


if __name__ == "__main__":
    main()
