"""ORM models. Relationships are lazy="raise": a stray lazy load fails loudly instead of doing I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class TeamMember(Base):
    """A user (identified by email, stored lower-case) in a team, with a role."""

    __tablename__ = "team_members"

    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    """A team-scoped bearer token. Only the SHA-256 of the secret is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the secret, so a user can tell tokens apart; not enough to use one.
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Gateway(Base):
    __tablename__ = "gateways"
    # Names are unique within a team, so a taken name says nothing about other teams.
    __table_args__ = (UniqueConstraint("team_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    # "team": only the owning team sees it; "public": every team may read and call it.
    visibility: Mapped[str] = mapped_column(String(16), default="team")
    name: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    transport: Mapped[str] = mapped_column(String(32))
    # Backend headers (credentials), Fernet-encrypted JSON; "" when there are none.
    headers_enc: Mapped[str] = mapped_column(Text, default="")
    # stdio backends: the program a worker runs ("" url), its arguments, Fernet-encrypted env
    # JSON ("" when none) and working directory.
    command: Mapped[str | None] = mapped_column(Text)
    args: Mapped[list[str] | None] = mapped_column(JSONB)
    env_enc: Mapped[str] = mapped_column(Text, default="")
    cwd: Mapped[str | None] = mapped_column(Text)
    # OAuth 2.1 client credentials, Fernet-encrypted JSON; "" when the gateway has none.
    auth_enc: Mapped[str] = mapped_column(Text, default="")
    timeout_s: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(32), default="active")
    protocol_version: Mapped[str | None] = mapped_column(String(32))
    server_name: Mapped[str | None] = mapped_column(Text)
    server_version: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    refreshed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The backend's ServerCapabilities as it declared them (model_dump by alias, None if unknown).
    capabilities: Mapped[dict[str, Any] | None] = mapped_column(JSONB)

    tools: Mapped[list[Tool]] = relationship(
        back_populates="gateway", lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )


class Tool(Base):
    __tablename__ = "tools"
    __table_args__ = (UniqueConstraint("gateway_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    gateway_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    input_schema: Mapped[dict[str, Any]] = mapped_column(JSONB)
    output_schema: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    annotations: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    icons: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    execution: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    gateway: Mapped[Gateway] = relationship(back_populates="tools", lazy="raise")


class Resource(Base):
    """A resource or a resource template (uri_template set, uri empty) a gateway offers."""

    __tablename__ = "resources"
    __table_args__ = (UniqueConstraint("gateway_id", "uri"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    gateway_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"), index=True)
    uri: Mapped[str] = mapped_column(Text)
    is_template: Mapped[bool] = mapped_column(default=False)
    name: Mapped[str] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    mime_type: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)
    annotations: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    icons: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class Prompt(Base):
    __tablename__ = "prompts"
    __table_args__ = (UniqueConstraint("gateway_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    gateway_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    arguments: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    icons: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class Server(Base):
    """A virtual MCP server: tools, resources and prompts composed from any gateways its team sees,
    served at /v1/servers/{id}/mcp."""

    __tablename__ = "servers"
    __table_args__ = (UniqueConstraint("team_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    # Anonymous MCP clients may use the endpoint (as a member of the server's team). Off by default.
    public_mcp: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


def _membership(table: str, item_table: str, item_column: str) -> Table:
    """A server's items of one kind. Rows go when the server or the item goes (a gateway's deletion
    or a refresh that drops the item), through the foreign keys' ON DELETE CASCADE."""
    return Table(
        table,
        Base.metadata,
        Column("server_id", ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True),
        Column(item_column, ForeignKey(f"{item_table}.id", ondelete="CASCADE"), primary_key=True, index=True),
        Column("position", Float, nullable=False, default=0.0),
    )


server_tools = _membership("server_tools", "tools", "tool_id")
server_resources = _membership("server_resources", "resources", "resource_id")
server_prompts = _membership("server_prompts", "prompts", "prompt_id")
