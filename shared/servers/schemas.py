"""Request and response bodies for virtual servers, and the snapshot the MCP front door works from."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from shared.prompts.schemas import PromptOut
from shared.resources.schemas import ResourceOut
from shared.tools.schemas import ToolOut

# Items of one kind per server. MCP lists page through them (api/mcp/catalog.py).
MAX_ITEMS = 10_000

Refs = list[str]


@dataclass(frozen=True)
class ServerSnapshot:
    """A server as plain values: what the front door needs to authorize a request."""

    id: uuid.UUID
    team_id: uuid.UUID
    name: str
    description: str | None
    public_mcp: bool


class ServerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9_-]{1,64}$")
    description: str | None = Field(default=None, max_length=2000)
    # The owning team (id or name); a team token's own team when left out.
    team: str | None = Field(default=None, min_length=1, max_length=64)
    # Tool refs (id or `{gateway}.{tool}`), resource refs (id or `{gateway}:{uri}`), prompt refs
    # (id or `{gateway}.{prompt}`), resolved as the server's team sees them.
    tools: Refs = Field(default_factory=list, max_length=MAX_ITEMS)
    resources: Refs = Field(default_factory=list, max_length=MAX_ITEMS)
    prompts: Refs = Field(default_factory=list, max_length=MAX_ITEMS)
    # Anonymous MCP clients may use /v1/servers/{id}/mcp (see the README). Off by default.
    public_mcp: StrictBool = False


class ServerPatch(BaseModel):
    """Fields left out stay as they are; a list given replaces the server's items of that kind."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=r"^[a-z0-9_-]{1,64}$")
    description: str | None = Field(default=None, max_length=2000)
    tools: Refs | None = Field(default=None, max_length=MAX_ITEMS)
    resources: Refs | None = Field(default=None, max_length=MAX_ITEMS)
    prompts: Refs | None = Field(default=None, max_length=MAX_ITEMS)
    public_mcp: StrictBool | None = None


class ServerOut(BaseModel):
    id: uuid.UUID
    team_id: uuid.UUID
    name: str
    description: str | None
    public_mcp: bool
    mcp_path: str
    # As the catalog shows them (GET /v1/tools/{ref}, ...), in the server's order.
    tools: list[ToolOut]
    resources: list[ResourceOut]
    prompts: list[PromptOut]
    created_at: datetime
    updated_at: datetime


class ServerList(BaseModel):
    items: list[ServerOut]
