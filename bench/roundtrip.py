"""Round trip of one echo call, five ways, side by side in one run.

1. direct:  the MCP SDK on a reused session straight to the backend (the ceiling)
2. call:    POST /v1/tools/{ref}/call through mcpq (API -> arq -> worker -> backend -> push)
3. jobs:    POST /v1/tools/{ref}/jobs, then GET /v1/jobs/{id}?wait=30
4. direct stdio: the SDK on a reused session to the same server run as a stdio subprocess
5. call stdio:   POST /call to a stdio gateway of that server (the worker's pooled process)

Usage: python bench/roundtrip.py [--calls 500] [--warmup 50]
Uses the local PostgreSQL (or BENCH_DATABASE_URL) with a fresh database, and a private redis-server
(other users of the shared one would add their latency to ours).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._harness import BACKEND, private_redis, stack
from bench._stats import percentile

# The benchmark backend over stdio, as the worker and the direct client both start it.
STDIO_SERVER = {"command": sys.executable, "args": [str(BACKEND), "--stdio"]}


HTTP_DIRECT = "direct (MCP SDK, reused session)"
STDIO_DIRECT = "direct stdio (MCP SDK, reused session)"


async def timed(n: int, warmup: int, once: Callable[[int], Awaitable[None]]) -> list[float]:
    for i in range(warmup):
        await once(-1 - i)
    samples = []
    for i in range(n):
        start = time.perf_counter()
        await once(i)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def main(calls: int, warmup: int) -> None:
    allow = {"MCPQ_STDIO_ALLOWED_COMMANDS": sys.executable}
    with private_redis() as redis_server, stack(redis_url=redis_server.url, extra_env=allow) as s:
        async with httpx.AsyncClient(
            base_url=s.api, headers={"Authorization": f"Bearer {s.token}"}, timeout=60
        ) as admin:
            (await admin.post("/v1/teams", json={"name": "bench"})).raise_for_status()
            created = await admin.post(
                "/v1/gateways", json={"name": "bench", "url": s.backend_url, "team": "bench"}
            )
            created.raise_for_status()
            body = {"name": "bench-stdio", "transport": "stdio", "team": "bench", **STDIO_SERVER}
            stdio = await admin.post("/v1/gateways", json=body)
            stdio.raise_for_status()
            # Calls go through a team member's token, as a real client's would.
            minted = await admin.post("/v1/tokens", json={"name": "bench", "team": "bench", "role": "member"})
            minted.raise_for_status()
        async with httpx.AsyncClient(
            base_url=s.api, headers={"Authorization": f"Bearer {minted.json()['token']}"}, timeout=60
        ) as api:

            async def via_call(i: int) -> None:
                r = await api.post("/v1/tools/bench.echo/call", json={"arguments": {"text": f"m{i}"}})
                assert r.status_code == 200 and r.json()["result"]["content"][0]["text"] == f"m{i}", r.text

            async def via_stdio(i: int) -> None:
                r = await api.post("/v1/tools/bench-stdio.echo/call", json={"arguments": {"text": f"s{i}"}})
                assert r.status_code == 200 and r.json()["result"]["content"][0]["text"] == f"s{i}", r.text

            async def via_jobs(i: int) -> None:
                r = await api.post("/v1/tools/bench.echo/jobs", json={"arguments": {"text": f"j{i}"}})
                assert r.status_code == 202, r.text
                got = await api.get(f"/v1/jobs/{r.json()['job_id']}", params={"wait": 30})
                body = got.json()
                assert body["status"] == "completed" and body["result"]["content"][0]["text"] == f"j{i}", body

            async with (
                httpx2.AsyncClient() as http,
                Client(streamable_http_client(s.backend_url, http_client=http), cache=None) as mcp,
                Client(StdioServerParameters(**STDIO_SERVER), cache=None) as mcp_stdio,
            ):

                async def direct(i: int) -> None:
                    r = await mcp.call_tool("echo", {"text": f"d{i}"})
                    assert r.content[0].text == f"d{i}"  # type: ignore[union-attr]

                async def direct_stdio(i: int) -> None:
                    r = await mcp_stdio.call_tool("echo", {"text": f"e{i}"})
                    assert r.content[0].text == f"e{i}"  # type: ignore[union-attr]

                # (path, samples, the direct path it is compared with)
                results = [
                    (HTTP_DIRECT, await timed(calls, warmup, direct), HTTP_DIRECT),
                    ("POST /call", await timed(calls, warmup, via_call), HTTP_DIRECT),
                    ("POST /jobs + GET ?wait=", await timed(calls, warmup, via_jobs), HTTP_DIRECT),
                    (STDIO_DIRECT, await timed(calls, warmup, direct_stdio), STDIO_DIRECT),
                    ("POST /call, stdio gateway", await timed(calls, warmup, via_stdio), STDIO_DIRECT),
                ]

    medians = {name: statistics.median(samples) for name, samples, _ in results}
    print(f"\nround trip of one echo call, {calls} calls in a row each (after {warmup} warm-up)\n")
    print("| path | p50 ms | p99 ms | mean ms | p50 added vs direct |")
    print("|---|---:|---:|---:|---:|")
    for name, samples, base in results:
        p50 = medians[name]
        print(
            f"| {name} | {p50:.2f} | {percentile(samples, 99):.2f} | {statistics.fmean(samples):.2f} | "
            f"{p50 - medians[base]:+.2f} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.warmup))
