"""An MCP server over stdio for tests (the SDK's MCPServer), run by a worker as a subprocess:
`python tests/stdio_server.py [MODE [NAME]]` (NAME: the server name its handshake declares).

Modes that misbehave on purpose: `exit` (writes to stderr and exits before the handshake),
`garbage` (writes a line that is not JSON-RPC on stdout, then waits), `silent` (never answers).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path
from typing import Annotated

from mcp.server import MCPServer
from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Elicit, Resolve
from pydantic import BaseModel


def touch(path: str) -> None:
    Path(path).write_text("")


class Name(BaseModel):
    name: str


def ask_name(prompt: str) -> Elicit[Name]:
    return Elicit(prompt, Name)


def build(name: str = "mcpq-stdio-test") -> MCPServer:
    server = MCPServer(name, version="0.1.0")

    @server.tool()
    async def who(prompt: str, answer: Annotated[ElicitationResult[Name], Resolve(ask_name)]) -> str:
        """Ask the user's name (elicitation), then greet them."""
        return f"hello {answer.data.name}" if isinstance(answer, AcceptedElicitation) else answer.action

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def pid() -> int:
        """This server's process id (tests kill it)."""
        return os.getpid()

    @server.tool()
    def env(name: str) -> str:
        """The SHA-256 of an environment variable of this process ("" if unset): the value itself
        must not end up in a job result."""
        value = os.environ.get(name)
        return "" if value is None else hashlib.sha256(value.encode()).hexdigest()

    @server.tool()
    async def sleep(seconds: float, ctx: Context) -> str:
        """Sleep, reporting progress every 0.1 s."""
        steps = max(1, int(seconds / 0.1))
        for i in range(steps):
            await ctx.report_progress(i, steps, f"step {i}")
            await asyncio.sleep(seconds / steps)
        return f"slept {seconds}"

    @server.tool()
    async def hold(marker: str) -> str:
        """Write `marker`.started, wait up to a minute; if cancelled, write `marker`.cancelled."""
        touch(f"{marker}.started")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            touch(f"{marker}.cancelled")
            raise
        return "held"

    @server.tool()
    def shout(text: str) -> str:
        """Write a long line on stderr, then answer."""
        print(f"shout {text} " + "x" * 5000, file=sys.stderr, flush=True)
        return text

    @server.resource("demo://readme")
    def readme() -> str:
        return "hello from a stdio resource"

    @server.prompt()
    def greet(name: str) -> str:
        return f"Hello {name}"

    return server


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "serve"
    print(f"stdio test server starting ({mode})", file=sys.stderr, flush=True)
    if mode == "exit":
        print("fatal: no configuration found", file=sys.stderr, flush=True)
        sys.exit(3)
    if mode == "garbage":
        print("Welcome! this is not JSON-RPC", flush=True)
        sys.stdin.read()
        return
    if mode == "silent":
        sys.stdin.read()
        return
    build(*sys.argv[2:3]).run("stdio")


if __name__ == "__main__":
    main()
