"""Who is calling, what each role may do, and the token request and response bodies."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import Forbidden, NotFound


class Role(StrEnum):
    """viewer: read the catalog; member: also call tools and manage the team's jobs;
    admin: also manage the team's gateways, members and tokens."""

    VIEWER = "viewer"
    MEMBER = "member"
    ADMIN = "admin"

    def covers(self, needed: Role) -> bool:
        return _RANK[self] >= _RANK[needed]


_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2}


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, as plain values. `team_id` is None only for the platform admin."""

    role: Role
    team_id: uuid.UUID | None = None
    token_id: uuid.UUID | None = None

    @property
    def platform(self) -> bool:
        return self.team_id is None

    @property
    def scope(self) -> str:
        """What a cache entry resolved for this caller is keyed by: what it may see."""
        return "*" if self.team_id is None else str(self.team_id)

    def authorize(self, owner: uuid.UUID | None, needed: Role, what: str, *, public: bool = False) -> None:
        """404 if the caller cannot see an item of team `owner`, 403 if it sees it but may not do this.

        Another team's items answer 404 unless public, so nothing leaks about them; a public item
        may be read and used by every team but is managed only by its own.
        """
        if self.platform:
            return
        own = owner is not None and owner == self.team_id
        if not (own or public):
            raise NotFound(f"{what} not found")
        if not self.role.covers(needed) or (needed is Role.ADMIN and not own):
            raise Forbidden(f"a {self.role.value} token may not do this")

    def job_team(self, owner: uuid.UUID) -> str:
        """The team a job this caller starts belongs to: its own (a public item used by another
        team runs as that team's job), or for the platform admin the team that owns the item."""
        return str(self.team_id or owner)

    def require_platform(self) -> None:
        if not self.platform:
            raise Forbidden("only the platform admin may do this")


PLATFORM_ADMIN = Principal(role=Role.ADMIN)


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    team: str = Field(min_length=1, max_length=64, description="team id or name")
    role: Role
    expires_in: int | None = Field(default=None, gt=0, le=10 * 365 * 86400, description="seconds")


class TokenOut(BaseModel):
    id: uuid.UUID
    name: str
    team_id: uuid.UUID
    role: Role
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    """Returned once, at creation: the secret is not stored and cannot be shown again."""

    token: str


class TokenList(BaseModel):
    items: list[TokenOut]
