"""Request and response bodies for prompts, and the plain snapshot a render carries out of the session."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.jobs.schemas import BackendSpec


@dataclass(frozen=True)
class PlainPrompt:
    """Everything a render needs, copied out of the DB session before any slow I/O."""

    id: str
    name: str
    qualified_name: str
    arguments: tuple[tuple[str, bool], ...]  # (name, required) as the backend declared them
    backend: BackendSpec
    team_id: uuid.UUID
    public: bool


class PromptOut(BaseModel):
    id: uuid.UUID
    name: str
    qualified_name: str
    gateway: str
    gateway_id: uuid.UUID
    description: str | None
    arguments: list[dict[str, Any]]
    # As the backend declared them (MCP `title`, `icons`, `_meta`).
    title: str | None = None
    icons: list[dict[str, Any]] | None = None
    meta: dict[str, Any] | None = None


class PromptPage(BaseModel):
    items: list[PromptOut]
    next_cursor: str | None


class RenderRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"arguments": {"name": "Ada"}}]}
    )

    arguments: dict[str, str] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0)

    @property
    def request(self) -> dict[str, str]:
        return self.arguments


class RenderJobRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"arguments": {"name": "Ada"}}]}
    )

    arguments: dict[str, str] = Field(default_factory=dict)

    @property
    def request(self) -> dict[str, str]:
        return self.arguments
