"""`python -m deploy.demo_backend [PORT]`: a small MCP server to register as your first gateway.

`make run` starts it on http://127.0.0.1:9000/mcp (MCPQ_DEMO_PORT; 0 leaves it off). It has:
- tools `echo` (returns its text) and `countdown` (takes `seconds`, reports progress each
  second: a call long enough to watch as a job),
- a resource `demo://readme` and a prompt `greet`.
It speaks streamable HTTP with sessions, as most MCP servers do, on loopback only.
"""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

DEFAULT_PORT = 9000
MAX_COUNTDOWN_S = 600

server = MCPServer("mcpq-demo", version="1.0.0")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
async def countdown(seconds: int, ctx: Context) -> str:
    """Count down `seconds` (at most 600), reporting progress every second."""
    seconds = max(0, min(seconds, MAX_COUNTDOWN_S))
    for done in range(seconds):
        await ctx.report_progress(done, seconds, f"{seconds - done} s left")
        await asyncio.sleep(1)
    await ctx.report_progress(seconds, seconds, "done")
    return f"counted down {seconds} s"


@server.resource("demo://readme", mime_type="text/plain")
def readme() -> str:
    """What this server is."""
    return "mcpq's demo backend: tools echo and countdown, this resource, and the prompt greet."


@server.prompt()
def greet(name: str) -> str:
    """Ask the model to greet someone."""
    return f"Say hello to {name} in one short sentence."


def main(argv: list[str]) -> None:
    port = int(argv[1]) if len(argv) > 1 else DEFAULT_PORT
    uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(sys.argv)
