"""Request and response bodies for gateways."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

Transport = Literal["streamable_http", "sse"]
Visibility = Literal["team", "public"]

MAX_HEADERS = 32
# What HTTP can carry (RFC 9110 token; a value of visible ASCII, spaces and tabs): anything else
# would only fail later, in the worker, as an unreachable backend.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")


class GatewayCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9_-]{1,64}$")
    url: str = Field(max_length=2048)
    # The owning team (id or name); a team token's own team when left out.
    team: str | None = Field(default=None, min_length=1, max_length=64)
    visibility: Visibility = "team"
    transport: Transport = "streamable_http"
    # Sent to the backend on every request (credentials). Encrypted at rest, never shown.
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an absolute http:// or https:// URL")
        return url

    @field_validator("headers")
    @classmethod
    def _sane_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        if len(headers) > MAX_HEADERS:
            raise ValueError(f"at most {MAX_HEADERS} headers")
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name!r}: use letters, digits and !#$%&'*+-.^_`|~ only")
            if not _HEADER_VALUE.fullmatch(value):
                raise ValueError(f"header {name!r}: the value must be printable ASCII (no line breaks)")
        return headers


class BreakerOut(BaseModel):
    """The gateway's circuit breaker: `closed` (calls go through), `open` (refused with 503 and
    `Retry-After` until `retry_after_s` passes), `half_open` (the next call probes the backend)."""

    status: str
    failures: int = Field(description="consecutive transport failures of calls to the gateway")
    retry_after_s: float


class GatewayOut(BaseModel):
    """A gateway as the API shows it. Backend `headers` are write-only and never appear here."""

    id: uuid.UUID
    team_id: uuid.UUID
    visibility: str
    name: str
    url: str
    transport: str
    timeout_s: float
    status: str
    protocol_version: str | None
    server_name: str | None
    server_version: str | None
    # The backend's MCP capabilities as its handshake declared them (None before discovery).
    capabilities: dict[str, Any] | None = None
    tool_count: int
    resource_count: int
    prompt_count: int
    created_at: datetime
    updated_at: datetime
    refreshed_at: datetime
    # None when Redis, which holds the breaker, could not be read.
    breaker: BreakerOut | None = None


class GatewayList(BaseModel):
    items: list[GatewayOut]
