"""Request and response bodies for tools, and the plain snapshot a call carries out of the session."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.jobs.schemas import BackendSpec


@dataclass(frozen=True)
class PlainTool:
    """Everything a call needs, copied out of the DB session before any slow I/O."""

    id: str
    name: str
    qualified_name: str
    input_schema: dict[str, Any]
    # The input schema as canonical JSON, made once when the tool is loaded: the key of its
    # compiled validator (shared/tools/kind.py), so a call does not serialise the schema anew.
    schema_key: str
    retry_safe: bool
    backend: BackendSpec
    # The owning team of the tool's gateway, and whether other teams may use it.
    team_id: uuid.UUID
    public: bool


class ToolOut(BaseModel):
    id: uuid.UUID
    name: str
    qualified_name: str
    gateway: str
    gateway_id: uuid.UUID
    title: str | None
    description: str | None
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    annotations: dict[str, Any] | None
    # As the backend declared them (MCP `icons`, `_meta`, `execution`); None when it did not.
    icons: list[dict[str, Any]] | None = None
    meta: dict[str, Any] | None = None
    execution: dict[str, Any] | None = None


class ToolPage(BaseModel):
    items: list[ToolOut]
    next_cursor: str | None


class CallRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"arguments": {"text": "hello"}}]}
    )

    arguments: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0)

    @property
    def request(self) -> dict[str, Any]:
        return self.arguments


class JobSubmitRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"arguments": {"text": "hello"}}]}
    )

    arguments: dict[str, Any] = Field(default_factory=dict)

    @property
    def request(self) -> dict[str, Any]:
        return self.arguments
