"""Request and response bodies for teams and their members."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.auth.schemas import Role

TEAM_NAME = r"^[a-z0-9_-]{1,64}$"
# Deliberately loose: one @, something either side, no spaces. Users are identified, not mailed.
EMAIL = r"^[^@\s]+@[^@\s]+$"


class TeamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TEAM_NAME)
    description: str | None = Field(default=None, max_length=2000)


class TeamUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=TEAM_NAME)
    description: str | None = Field(default=None, max_length=2000)


class TeamOut(BaseModel):
    id: uuid.UUID
    name: str
    description: str | None
    created_at: datetime
    updated_at: datetime


class TeamList(BaseModel):
    items: list[TeamOut]


class MemberAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(pattern=EMAIL, max_length=320)
    role: Role = Role.MEMBER

    @field_validator("email")
    @classmethod
    def _lower(cls, email: str) -> str:
        return email.lower()


class MemberOut(BaseModel):
    email: str
    role: Role
    created_at: datetime


class MemberList(BaseModel):
    items: list[MemberOut]
