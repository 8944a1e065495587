"""The benchmark backend: an MCP server with `echo` and `sleep`, stateful streamable HTTP."""

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
    uvicorn.run(
        server.streamable_http_app(),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
    )
