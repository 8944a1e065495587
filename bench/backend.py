"""The benchmark backend: an MCP server over streamable HTTP with the tools the benchmarks call.

- `echo(text)`: answers at once with the text (the fast shape).
- `sleep(seconds, tag)`: a long-running call that reports progress once a second, like the Node
  reference server's long-running tool, then answers `tag` (so the load driver can check that
  every answer is the one to its own request). No annotations: not safe to run twice.
- `sleep_idempotent(seconds, tag)`: the same, annotated `idempotentHint` (a worker that dies may
  have it run again).

Over HTTP it also serves `GET /bench/clock?start=T0&end=T1`: how long its `sleep` tools took from
entry to answer, and by how much each step's sleep overshot (its own event loop's lag), for calls
and steps that ended between T0 and T1 (`time.monotonic()`, one clock for every process on the
host). bench/load.py reads it for the steady window once the load is over, so a report tells the
backend's share of a slow call's latency from the gateway's.

Usage: python bench/backend.py PORT [--stateless] | python bench/backend.py --stdio
  default: stateful sessions and SSE response streams (progress flows during the call);
  --stateless: no sessions, JSON bodies (no progress stream);
  --stdio: the same server over stdin and stdout (a worker or the SDK runs it as a subprocess).

It listens on loopback with a listen backlog of 8192 (the kernel caps it at net.core.somaxconn),
no concurrency limit (uvicorn's default) and keep-alive connections held 120 s, so that thousands
of concurrent calls from the workers' pooled sessions are never refused by the backend itself.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp_types import ToolAnnotations
from starlette.requests import Request
from starlette.responses import JSONResponse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._stats import percentile

server = MCPServer("mcpq-bench-backend")


@dataclass
class Series:
    """Samples with the monotonic time each was taken at (arrays: a long run takes millions)."""

    at: array[float] = field(default_factory=lambda: array("d"))
    values: array[float] = field(default_factory=lambda: array("d"))

    def add(self, value: float) -> None:
        self.at.append(time.monotonic())
        self.values.append(value)

    def between(self, start: float, end: float) -> list[float]:
        return [v for t, v in zip(self.at, self.values, strict=True) if start <= t <= end]


@dataclass
class ToolClock:
    """The `sleep` tools' own timing: seconds from entry to answer, and each step's overshoot."""

    tool_s: Series = field(default_factory=Series)
    overshoot_s: Series = field(default_factory=Series)

    def summary(self, start: float, end: float) -> dict[str, float | int]:
        tool_s = self.tool_s.between(start, end)
        ms = [x * 1000 for x in self.overshoot_s.between(start, end)]
        if not tool_s or not ms:
            return {"calls": 0}  # nothing to tell (and JSON has no NaN)
        return {
            "calls": len(tool_s),
            "tool_p50_s": percentile(tool_s, 50),
            "tool_p90_s": percentile(tool_s, 90),
            "step_overshoot_p50_ms": percentile(ms, 50),
            "step_overshoot_p90_ms": percentile(ms, 90),
            "step_overshoot_p99_ms": percentile(ms, 99),
        }


clock = ToolClock()


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


async def _sleep_with_progress(seconds: float, ctx: Context) -> None:
    entered = time.monotonic()
    steps = max(1, math.ceil(seconds))
    for step in range(1, steps + 1):
        slept = time.monotonic()
        await asyncio.sleep(seconds / steps)
        clock.overshoot_s.add(time.monotonic() - slept - seconds / steps)
        await ctx.report_progress(step, steps, f"{step}/{steps}")
    clock.tool_s.add(time.monotonic() - entered)


async def clock_endpoint(request: Request) -> JSONResponse:
    try:
        start, end = float(request.query_params["start"]), float(request.query_params["end"])
    except (KeyError, ValueError):
        return JSONResponse({"error": "start and end (monotonic seconds) are required"}, status_code=400)
    return JSONResponse(clock.summary(start, end))


@server.tool()
async def sleep(seconds: float, ctx: Context, tag: str = "ok") -> str:
    """Sleep, reporting progress each second, then answer the tag."""
    await _sleep_with_progress(seconds, ctx)
    return tag


@server.tool(annotations=ToolAnnotations(idempotentHint=True))
async def sleep_idempotent(seconds: float, ctx: Context, tag: str = "ok") -> str:
    """Sleep like `sleep`; safe to run twice."""
    await _sleep_with_progress(seconds, ctx)
    return tag


if __name__ == "__main__" and "--stdio" in sys.argv:
    server.run("stdio")
elif __name__ == "__main__":
    stateless = "--stateless" in sys.argv
    app = server.streamable_http_app(stateless_http=stateless, json_response=stateless)
    app.add_route("/bench/clock", clock_endpoint, methods=["GET"])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        backlog=8192,
        limit_concurrency=None,
        timeout_keep_alive=120,
    )
