"""The benchmark backend: an MCP server with `echo` and `sleep` over streamable HTTP.

Usage: python bench/backend.py PORT [--stateless]   (stateless: JSON bodies, no sessions)
"""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from mcp.server import MCPServer

server = MCPServer("mcpq-bench-backend")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return "ok"


if __name__ == "__main__":
    stateless = "--stateless" in sys.argv
    uvicorn.run(
        server.streamable_http_app(stateless_http=stateless, json_response=stateless),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        backlog=8192,
        timeout_keep_alive=120,
    )
