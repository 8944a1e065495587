"""Job records and payloads: plain JSON values only (no ORM objects, no pickle)."""

from __future__ import annotations

import hashlib
import json
import shlex
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NotRequired, TypedDict


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    # Running, and its backend has asked the caller something (elicitation or sampling): the
    # worker holds the backend's request open until an answer comes or `input_timeout_s` passes.
    INPUT_REQUIRED = "input_required"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


# Record fields of a pending question and of its answer, followed by the question's key. One field
# each, not a JSON map the Lua scripts would re-encode (cjson turns an empty array into {}).
ASK_PREFIX = "ask:"
ANSWER_PREFIX = "answer:"

TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class JobKind(StrEnum):
    CALL_TOOL = "call_tool"
    DISCOVER = "discover"
    READ_RESOURCE = "read_resource"
    GET_PROMPT = "get_prompt"
    # completion/complete for an argument of a prompt or a resource template.
    COMPLETE = "complete"
    # Hold a backend subscription to a resource (shared/subscriptions.py); its payload is a read's.
    SUBSCRIBE_RESOURCE = "subscribe_resource"


class BackendSpec(TypedDict):
    """What a worker needs to reach a backend MCP server. Copied out of the DB row."""

    gateway_id: str
    gateway: str
    url: str
    transport: str
    # The backend's headers (credentials) as a Fernet token ("" for none): a reader of Redis
    # learns nothing from it. Only workers decrypt it, when they connect.
    headers_enc: str
    # The gateway's OAuth client credentials, a Fernet token likewise ("" or absent for none).
    auth_enc: NotRequired[str]
    timeout_s: float
    # stdio backends only (transport "stdio", url ""): the program a worker runs, its arguments,
    # its extra environment (sealed like the headers) and its working directory.
    command: NotRequired[str]
    args: NotRequired[list[str]]
    env_enc: NotRequired[str]
    cwd: NotRequired[str | None]


def backend_target(spec: BackendSpec) -> str:
    """What a backend is, for people: its URL, or a stdio server's command line."""
    if spec["transport"] != "stdio":
        return spec["url"]
    return shlex.join([spec.get("command", ""), *spec.get("args", [])])


class JobPayload(TypedDict):
    """What every job carries; each kind adds its own fields."""

    job_id: str
    backend: BackendSpec
    # A job that is safe to run twice (reads, discovery, tools marked idempotentHint/readOnlyHint)
    # is run again after its worker dies; any other is failed as worker_lost.
    retry_safe: bool
    # After this (epoch seconds) a worker no longer starts the job: its caller has given up.
    deadline: float
    # The W3C trace context of the enqueue span (`traceparent`, `tracestate`), when tracing is on
    # (shared/tracing.py); the worker's span continues it.
    trace: NotRequired[dict[str, str]]
    # The caller relays the job's events (progress, backend logs) as they come: the worker
    # publishes every one; absent, only the record's latest progress is written.
    live_events: NotRequired[bool]
    # The least severe backend log level (LOG_LEVELS) the caller relays live; absent: the worker
    # drops the backend's `notifications/message` of this job.
    log_level: NotRequired[str]


class CallToolPayload(JobPayload):
    tool: str
    arguments: dict[str, Any]


class ReadResourcePayload(JobPayload):
    uri: str


class GetPromptPayload(JobPayload):
    prompt: str
    arguments: dict[str, str]


class CompletePayload(JobPayload):
    # MCP's wire forms: `{"type": "ref/prompt", "name"}` or `{"type": "ref/resource", "uri"}`,
    # `{"name", "value"}`, and the arguments already resolved (may be empty).
    ref: dict[str, str]
    argument: dict[str, str]
    context: dict[str, str]


DiscoverPayload = JobPayload


def new_job_id() -> str:
    # 122 random bits: unguessable, and fresh (arq never trims its abort set, so a reused id
    # could be aborted before it starts).
    return uuid.uuid4().hex


def job_payload(
    backend: BackendSpec, *, retry_safe: bool, queue_ttl_s: float, **fields: Any
) -> dict[str, Any]:
    """A new job's payload: a fresh id, the backend, the retry rule and the queue deadline, plus the
    kind's own fields. Every kind's payload is made here."""
    base: JobPayload = {
        "job_id": new_job_id(),
        "backend": backend,
        "retry_safe": retry_safe,
        "deadline": time.time() + queue_ttl_s,
    }
    return {**base, **fields}


# Payload fields that differ between two sends of the same request.
UNASKED = frozenset({"job_id", "deadline", "backend", "trace", "live_events", "log_level"})

# MCP's log levels (RFC 5424), least severe first.
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


def at_least(level: str, threshold: str) -> bool:
    """Whether a log entry at `level` is at or above `threshold` (an unknown level passes)."""
    if level not in LOG_LEVELS or threshold not in LOG_LEVELS:
        return True
    return LOG_LEVELS.index(level) >= LOG_LEVELS.index(threshold)


# What a running job reports, in the order the backend sent it: {"type": "progress", "progress",
# "total", "message"} or {"type": "log", "level", "data", "logger"}.
JobEvent = dict[str, Any]


@dataclass(frozen=True)
class PreparedJob:
    """A job ready to enqueue: checked, authorized, with the team it belongs to."""

    kind: JobKind
    payload: dict[str, Any]
    # What the job acts on, for people: `gateway.tool`, `gateway:uri`, `gateway.prompt`.
    item: str
    team: str | None
    # The caller's Idempotency-Key: the same key from the same team names the same job.
    idempotency_key: str | None = None

    @property
    def id(self) -> str:
        return str(self.payload["job_id"])

    @property
    def fingerprint(self) -> str:
        """What the job asks, without what differs between two sends of the same request (its id
        deadline and trace context): a reused idempotency key must come with the same request."""
        asked = {k: v for k, v in self.payload.items() if k not in UNASKED}
        canonical = json.dumps([self.kind.value, self.item, asked], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def backend_timeout_s(self) -> float:
        return float(self.payload["backend"]["timeout_s"])


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
    # What the job acts on (see PreparedJob.item).
    item: str | None
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
    # What the backend asks and is not yet answered, by key, as MCP's `inputRequests` map
    # ({key: {"method", "params"}}); one record field per question (ASK_PREFIX + key).
    input_requests: dict[str, Any] | None = None

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
            item=fields.get("item") or None,
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
            input_requests={
                name[len(ASK_PREFIX) :]: json.loads(value)
                for name, value in fields.items()
                if name.startswith(ASK_PREFIX)
            }
            or None,
        )

    @property
    def asking(self) -> dict[str, Any]:
        """The questions waiting for an answer (empty unless INPUT_REQUIRED)."""
        return (self.input_requests or {}) if self.status is JobStatus.INPUT_REQUIRED else {}

    def to_public(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "item": self.item,
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
        if self.asking:
            body["input_requests"] = self.asking
        return body
