"""The benchmark backend: an MCP server over streamable HTTP with the tools the benchmarks call.

- `echo(text)`: answers at once with the text (the fast shape).
- `sleep(seconds, tag)`: a long-running call that reports progress once a second, like the Node
  reference server's long-running tool, then answers `tag` (so the load driver can check that
  every answer is the one to its own request). No annotations: not safe to run twice.
- `sleep_idempotent(seconds, tag)`: the same, annotated `idempotentHint` (a worker that dies may
  have it run again).

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

import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp_types import ToolAnnotations

server = MCPServer("mcpq-bench-backend")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


async def _sleep_with_progress(seconds: float, ctx: Context) -> None:
    steps = max(1, math.ceil(seconds))
    for step in range(1, steps + 1):
        await asyncio.sleep(seconds / steps)
        await ctx.report_progress(step, steps, f"{step}/{steps}")


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
    uvicorn.run(
        server.streamable_http_app(stateless_http=stateless, json_response=stateless),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        backlog=8192,
        limit_concurrency=None,
        timeout_keep_alive=120,
    )
