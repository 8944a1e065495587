"""What the MCP handlers and Tasks share: who is calling, and jobs and errors in MCP's wire terms.

A leaf module: it imports no other module of the front door.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import mcp_types as types
from mcp import MCPError
from mcp.server.context import ServerRequestContext
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST

from shared.auth.schemas import Principal
from shared.errors import MCPQError
from shared.jobs.schemas import JobRecord, JobStatus
from shared.servers.schemas import ServerSnapshot

SCOPE_KEY = "mcpq.caller"
# The client's MCP session (2025-era, `Mcp-Session-Id`), put on the scope by api/mcp/sessions.py.
SESSION_KEY = "mcpq.session"


@dataclass(frozen=True)
class Caller:
    """Who is calling which server: put on the ASGI scope by the endpoint, read by the handlers."""

    server: ServerSnapshot
    principal: Principal
    # An anonymous client of a `public_mcp` server (acting as a member of the server's team).
    anonymous: bool

    @property
    def team(self) -> str:
        """The team whose jobs this caller lists as tasks (the rule jobs are filed by)."""
        return self.principal.job_team(self.server.team_id)


@runtime_checkable
class ClientSessionState(Protocol):
    """What the handlers may read and change of the client's MCP session."""

    @property
    def log_level(self) -> str | None: ...

    async def set_log_level(self, level: str) -> None: ...


def session_of(ctx: ServerRequestContext[Any, Any]) -> ClientSessionState | None:
    """The request's MCP session; None for a sessionless request (2026-07-28)."""
    request = ctx.request
    found = request.scope.get(SESSION_KEY) if request is not None else None
    return found if isinstance(found, ClientSessionState) else None


def caller_of(ctx: ServerRequestContext[Any, Any]) -> Caller:
    request = ctx.request
    caller = request.scope.get(SCOPE_KEY) if request is not None else None
    if not isinstance(caller, Caller):  # every request comes through the endpoint, which sets it
        raise MCPError(code=INVALID_REQUEST, message="no caller")
    return caller


def protocol_error(exc: MCPQError) -> MCPError:
    """An mcpq error as a JSON-RPC error: the caller's mistakes are invalid params, the rest internal."""
    if exc.status_code in (404, 422):
        code = INVALID_PARAMS
    elif exc.status_code < 500:
        code = INVALID_REQUEST
    else:
        code = INTERNAL_ERROR
    return MCPError(code=code, message=exc.detail)


def failure_text(record: JobRecord) -> str:
    if record.status is JobStatus.CANCELLED:
        return "the call was cancelled"
    if not record.status.terminal:
        return f"the call did not finish in time (job {record.id} is still {record.status.value})"
    error = record.error or {"type": "error", "message": "the job failed"}
    return f"{error['type']}: {error['message']}"


def tool_error(text: str) -> types.CallToolResult:
    """A tool execution error the model can read (and correct, for bad arguments: SEP-1303)."""
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)


def tool_result(record: JobRecord) -> types.CallToolResult:
    """The stored CallToolResult, or a tool error that says what went wrong with the job."""
    if record.status is JobStatus.COMPLETED and isinstance(record.result, dict):
        return types.CallToolResult.model_validate(record.result, by_name=False)
    return tool_error(failure_text(record))


def completed_or_raise(record: JobRecord) -> dict[str, Any]:
    if record.status is JobStatus.COMPLETED and isinstance(record.result, dict):
        return dict(record.result)
    raise MCPError(code=INTERNAL_ERROR, message=failure_text(record))
