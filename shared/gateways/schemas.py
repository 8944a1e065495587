"""Request and response bodies for gateways."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Transport = Literal["streamable_http", "sse", "stdio"]
Visibility = Literal["team", "public"]

MAX_HEADERS = 32
# What HTTP can carry (RFC 9110 token; a value of visible ASCII, spaces and tabs): anything else
# would only fail later, in the worker, as an unreachable backend.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
MAX_ARGS = 64
MAX_ENV = 64
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def http_url(url: str, what: str = "url") -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an absolute http:// or https:// URL")
    return url


def sane_headers(headers: dict[str, str]) -> dict[str, str]:
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"at most {MAX_HEADERS} headers")
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"header name {name!r}: use letters, digits and !#$%&'*+-.^_`|~ only")
        if not _HEADER_VALUE.fullmatch(value):
            raise ValueError(f"header {name!r}: the value must be printable ASCII (no line breaks)")
    return headers


class _GatewayChecks(BaseModel):
    """The checks of a gateway's fields, shared by register and PATCH (None: not given)."""

    @field_validator("url", check_fields=False)
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        return None if url is None else http_url(url)

    @field_validator("headers", check_fields=False)
    @classmethod
    def _sane_headers(cls, headers: dict[str, str] | None) -> dict[str, str] | None:
        return None if headers is None else sane_headers(headers)

    @field_validator("command", "cwd", check_fields=False)
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\0" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @field_validator("cwd", check_fields=False)
    @classmethod
    def _absolute(cls, cwd: str | None) -> str | None:
        if cwd is not None and not cwd.startswith("/"):
            raise ValueError("cwd must be an absolute path")
        return cwd

    @field_validator("args", check_fields=False)
    @classmethod
    def _sane_args(cls, args: list[str] | None) -> list[str] | None:
        if args is not None and any("\0" in arg or len(arg) > 4096 for arg in args):
            raise ValueError("each argument must be at most 4096 characters, without NUL characters")
        return args

    @field_validator("env", check_fields=False)
    @classmethod
    def _sane_env(cls, env: dict[str, str] | None) -> dict[str, str] | None:
        if env is not None and len(env) > MAX_ENV:
            raise ValueError(f"at most {MAX_ENV} environment variables")
        for name, value in (env or {}).items():
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"environment variable name {name!r}: use letters, digits and _ only")
            if "\0" in value or len(value) > 32768:
                raise ValueError(f"environment variable {name!r}: at most 32768 characters, no NUL")
        return env


class OAuthClientCredentials(BaseModel):
    """OAuth 2.1 client credentials (RFC 6749 section 4.4): workers get a bearer token from
    `token_url` and send it to the backend. Encrypted at rest and in job payloads; the secret is
    never shown."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["oauth2_client_credentials"]
    token_url: str = Field(max_length=2048)
    client_id: str = Field(min_length=1, max_length=512, pattern=r"^[\x20-\x7e]+$")
    client_secret: str = Field(min_length=1, max_length=4096, pattern=r"^[\x20-\x7e]+$")
    scope: str | None = Field(default=None, min_length=1, max_length=1024, pattern=r"^[\x20-\x7e]+$")
    audience: str | None = Field(default=None, min_length=1, max_length=2048, pattern=r"^[\x20-\x7e]+$")

    @field_validator("token_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return http_url(url, "token_url")


class OAuthOut(BaseModel):
    """A gateway's OAuth settings as the API shows them: everything but the secret."""

    type: str
    token_url: str
    client_id: str
    scope: str | None = None
    audience: str | None = None


class GatewayCreate(_GatewayChecks):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9_-]{1,64}$")
    # HTTP transports: the backend's URL. stdio: leave it out and give `command` instead.
    url: str | None = Field(default=None, max_length=2048)
    # The owning team (id or name); a team token's own team when left out.
    team: str | None = Field(default=None, min_length=1, max_length=64)
    visibility: Visibility = "team"
    transport: Transport = "streamable_http"
    # Sent to the backend on every request (credentials). Encrypted at rest, never shown.
    headers: dict[str, str] = Field(default_factory=dict)
    # A bearer token from an OAuth token endpoint, instead of or beside static headers.
    auth: OAuthClientCredentials | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    # stdio only (platform admin): the program a worker runs (one of MCPQ_STDIO_ALLOWED_COMMANDS),
    # its arguments, extra environment variables (encrypted like headers, never shown) and
    # working directory (absolute).
    command: str | None = Field(default=None, min_length=1, max_length=1024)
    args: list[str] = Field(default_factory=list, max_length=MAX_ARGS)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = Field(default=None, min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _fields_of_transport(self) -> GatewayCreate:
        if self.transport == "stdio":
            if self.command is None:
                raise ValueError("a stdio gateway needs a command")
            if self.url is not None or self.headers or self.auth is not None:
                raise ValueError("a stdio gateway takes command, args, env and cwd, not url, headers or auth")
        else:
            if self.url is None:
                raise ValueError(f"a {self.transport} gateway needs a url")
            if self.command is not None or self.args or self.env or self.cwd is not None:
                raise ValueError("command, args, env and cwd are for transport stdio only")
        return self


class GatewayUpdate(_GatewayChecks):
    """PATCH /v1/gateways/{id}: the fields given replace the stored ones (`headers` and `env` as a
    whole; `auth: null` removes the OAuth settings, `cwd: null` the working directory). A new
    `url`, `headers` or `auth` (HTTP), or `command`, `args`, `env` or `cwd` (stdio, platform admin
    only) is tried by a discovery before anything is stored."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2048)
    headers: dict[str, str] | None = None
    auth: OAuthClientCredentials | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    visibility: Visibility | None = None
    command: str | None = Field(default=None, min_length=1, max_length=1024)
    args: list[str] | None = Field(default=None, max_length=MAX_ARGS)
    env: dict[str, str] | None = None
    cwd: str | None = Field(default=None, min_length=1, max_length=1024)

    @field_validator("timeout_s", "visibility", "url", "headers", "command", "args", "env", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may not be null (leave the field out to keep it)")
        return value


class BreakerOut(BaseModel):
    """The gateway's circuit breaker: `closed` (calls go through), `open` (refused with 503 and
    `Retry-After` until `retry_after_s` passes), `half_open` (the next call probes the backend)."""

    status: str
    failures: int = Field(description="consecutive transport failures of calls to the gateway")
    retry_after_s: float


class GatewayOut(BaseModel):
    """A gateway as the API shows it. Backend `headers`, a stdio gateway's `env` and the OAuth
    `client_secret` are write-only and never appear here."""

    id: uuid.UUID
    team_id: uuid.UUID
    visibility: str
    name: str
    url: str = Field(description='the backend\'s URL ("" for stdio)')
    transport: str
    # stdio gateways: the program, its arguments and working directory (None for HTTP).
    command: str | None = None
    args: list[str] | None = None
    cwd: str | None = None
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
    # The OAuth settings without the secret; None when the gateway has none.
    auth: OAuthOut | None = None
    # None when Redis, which holds the breaker, could not be read.
    breaker: BreakerOut | None = None
    # From real calls (any worker): the last success, and the last failure to reach the backend
    # (connect, transport, token endpoint). None when never seen, or Redis could not be read.
    last_seen_ok_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None


class GatewayList(BaseModel):
    items: list[GatewayOut]
