"""Request and response bodies for resources, and the plain snapshot a read carries out of the session."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.jobs.schemas import BackendSpec


@dataclass(frozen=True)
class PlainResource:
    """Everything a read needs, copied out of the DB session before any slow I/O."""

    id: str
    uri: str  # the URI, or for a template the URI template
    is_template: bool
    ref: str  # `{gateway}:{uri}`
    backend: BackendSpec
    team_id: uuid.UUID
    public: bool


class ResourceOut(BaseModel):
    id: uuid.UUID
    # `{gateway}:{uri}`: gateway names cannot contain a colon, so the first one splits it.
    ref: str
    uri: str
    is_template: bool
    name: str
    description: str | None
    mime_type: str | None
    gateway: str
    gateway_id: uuid.UUID
    # As the backend declared them (MCP `title`, `size`, `annotations`, `icons`, `_meta`).
    title: str | None = None
    size: int | None = None
    annotations: dict[str, Any] | None = None
    icons: list[dict[str, Any]] | None = None
    meta: dict[str, Any] | None = None


class ResourcePage(BaseModel):
    items: list[ResourceOut]
    next_cursor: str | None


class ReadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Required for a template (the concrete URI to read, which must match it); for a plain
    # resource it may be left out or repeat the resource's own URI.
    uri: str | None = Field(default=None, min_length=1, max_length=4096)
    timeout_s: float | None = Field(default=None, gt=0)

    @property
    def request(self) -> str | None:
        return self.uri


class ReadJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str | None = Field(default=None, min_length=1, max_length=4096)

    @property
    def request(self) -> str | None:
        return self.uri
