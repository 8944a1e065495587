"""Job records and payloads: plain JSON values only (no ORM objects, no pickle)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypedDict


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class JobKind(StrEnum):
    CALL_TOOL = "call_tool"
    DISCOVER = "discover"
    READ_RESOURCE = "read_resource"
    GET_PROMPT = "get_prompt"


class BackendSpec(TypedDict):
    """What a worker needs to reach a backend MCP server. Copied out of the DB row."""

    gateway_id: str
    gateway: str
    url: str
    transport: str
    # The backend's headers (credentials) as a Fernet token ("" for none): a reader of Redis
    # learns nothing from it. Only workers decrypt it, when they connect.
    headers_enc: str
    timeout_s: float


class CallToolPayload(TypedDict):
    job_id: str
    backend: BackendSpec
    tool: str
    arguments: dict[str, Any]
    # A tool that is safe to run twice (MCP idempotentHint/readOnlyHint) is re-run after a worker dies.
    retry_safe: bool
    deadline: float


class ReadResourcePayload(TypedDict):
    job_id: str
    backend: BackendSpec
    uri: str
    deadline: float


class GetPromptPayload(TypedDict):
    job_id: str
    backend: BackendSpec
    prompt: str
    arguments: dict[str, str]
    deadline: float


class DiscoverPayload(TypedDict):
    job_id: str
    backend: BackendSpec
    deadline: float


class JobError(TypedDict):
    type: str
    message: str


class Envelope(TypedDict, total=False):
    """What a job function returns. Job functions never raise: JSON cannot carry an exception."""

    ok: bool
    result: Any
    error: JobError


def utc_iso(ts: float | None = None) -> str:
    moment = datetime.now(UTC) if ts is None else datetime.fromtimestamp(ts, UTC)
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: str
    status: JobStatus
    tool: str | None
    # The team the job belongs to; only that team (and the platform admin) sees it.
    team: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    result: Any
    error: JobError | None
    attempts: int
    worker: str | None
    progress: dict[str, Any] | None
    cancel_requested: bool

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> JobRecord:
        return cls.from_fields({k.decode(): v.decode() for k, v in raw.items()})

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> JobRecord:
        def loads(name: str) -> Any:
            value = fields.get(name)
            return json.loads(value) if value else None

        return cls(
            id=fields["id"],
            kind=fields.get("kind", ""),
            status=JobStatus(fields["status"]),
            tool=fields.get("tool") or None,
            team=fields.get("team") or None,
            created_at=fields["created_at"],
            started_at=fields.get("started_at") or None,
            finished_at=fields.get("finished_at") or None,
            result=loads("result"),
            error=loads("error"),
            attempts=int(fields.get("attempts", "0")),
            worker=fields.get("worker") or None,
            progress=loads("progress"),
            cancel_requested=fields.get("cancel_requested") == "1",
        )

    def to_public(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "tool": self.tool,
            "team": self.team,
            "status": self.status.value,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "attempts": self.attempts,
            "worker": self.worker,
        }
        if self.status is JobStatus.COMPLETED:
            body["result"] = self.result
        if self.error is not None:
            body["error"] = self.error
        if self.progress is not None:
            body["progress"] = self.progress
        return body
