"""Virtual servers: compose tools, resources and prompts of any gateways a team sees."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth.schemas import Principal, Role
from shared.context import AppContext
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.gateways.service import parse_id
from shared.models import Gateway, Server, server_prompts, server_resources, server_tools, utcnow
from shared.prompts import repository as prompt_repository
from shared.resources import repository as resource_repository
from shared.servers import repository
from shared.servers.schemas import (
    ServerCreate,
    ServerOut,
    ServerPatch,
    ServerPrompt,
    ServerResource,
    ServerSnapshot,
    ServerTool,
)
from shared.teams import service as team_service
from shared.tools import repository as tool_repository

T = TypeVar("T")


def mcp_path(server_id: uuid.UUID) -> str:
    return f"/v1/servers/{server_id}/mcp"


def snapshot(server: Server) -> ServerSnapshot:
    return ServerSnapshot(
        id=server.id,
        team_id=server.team_id,
        name=server.name,
        description=server.description,
        public_mcp=server.public_mcp,
    )


async def _resolve(
    what: str,
    refs: list[str],
    by_id: Callable[[uuid.UUID], Awaitable[tuple[T, Gateway] | None]],
    by_name: Callable[[str], Awaitable[tuple[T, Gateway] | None]],
    key: Callable[[T], str],
) -> list[uuid.UUID]:
    """Each ref as the server's team sees it (422 if it sees no such item), refusing two items that
    MCP clients would see under one name (or URI)."""
    ids: list[uuid.UUID] = []
    exposed: dict[str, str] = {}
    for ref in refs:
        try:
            found = await by_id(uuid.UUID(ref))
        except ValueError:
            found = await by_name(ref)
        if found is None:
            raise ValidationFailed(f"{what}s: no {what} {ref!r} among those the server's team sees")
        item, _ = found
        item_id: uuid.UUID = item.id  # type: ignore[attr-defined]
        if item_id in ids:
            continue
        name = key(item)
        if name in exposed:
            raise ValidationFailed(
                f"{what}s: {ref!r} and {exposed[name]!r} would both appear to MCP clients as {name!r}"
            )
        exposed[name] = ref
        ids.append(item_id)
    return ids


def _split(ref: str, sep: str) -> tuple[str, str] | None:
    gateway, found, rest = ref.partition(sep)
    return (gateway, rest) if found else None


async def _compose(
    s: AsyncSession, server_id: uuid.UUID, team_id: uuid.UUID, body: ServerCreate | ServerPatch
) -> None:
    """Replace the server's items of each kind the body names."""
    if body.tools is not None:

        async def tool_by_name(ref: str) -> Any:
            parts = _split(ref, ".")
            return await tool_repository.by_qualified_name(s, team_id, *parts) if parts else None

        ids = await _resolve(
            "tool", body.tools, lambda i: tool_repository.by_id(s, team_id, i), tool_by_name, lambda t: t.name
        )
        await repository.replace_members(s, server_tools, server_id, ids)
    if body.resources is not None:

        async def resource_by_ref(ref: str) -> Any:
            parts = _split(ref, ":")
            return await resource_repository.by_gateway_uri(s, team_id, *parts) if parts else None

        ids = await _resolve(
            "resource",
            body.resources,
            lambda i: resource_repository.by_id(s, team_id, i),
            resource_by_ref,
            lambda r: r.uri,
        )
        await repository.replace_members(s, server_resources, server_id, ids)
    if body.prompts is not None:

        async def prompt_by_name(ref: str) -> Any:
            parts = _split(ref, ".")
            return await prompt_repository.by_qualified_name(s, team_id, *parts) if parts else None

        ids = await _resolve(
            "prompt",
            body.prompts,
            lambda i: prompt_repository.by_id(s, team_id, i),
            prompt_by_name,
            lambda p: p.name,
        )
        await repository.replace_members(s, server_prompts, server_id, ids)


async def _out(s: AsyncSession, server: Server) -> ServerOut:
    tools = await repository.tools(s, server.id)
    resources = await repository.resources(s, server.id)
    prompts = await repository.prompts(s, server.id)
    return ServerOut(
        id=server.id,
        team_id=server.team_id,
        name=server.name,
        description=server.description,
        public_mcp=server.public_mcp,
        mcp_path=mcp_path(server.id),
        tools=[
            ServerTool(id=t.id, name=t.name, qualified_name=f"{g.name}.{t.name}", gateway_id=g.id)
            for t, g in tools
        ],
        resources=[
            ServerResource(
                id=r.id, ref=f"{g.name}:{r.uri}", uri=r.uri, is_template=r.is_template, gateway_id=g.id
            )
            for r, g in resources
        ],
        prompts=[
            ServerPrompt(id=p.id, name=p.name, qualified_name=f"{g.name}.{p.name}", gateway_id=g.id)
            for p, g in prompts
        ],
        created_at=server.created_at,
        updated_at=server.updated_at,
    )


async def _visible(s: AsyncSession, principal: Principal, raw_id: str, needed: Role) -> Server:
    server = await repository.get(s, parse_id(raw_id, "server"))
    if server is None:
        raise NotFound(f"server {raw_id} not found")
    principal.authorize(server.team_id, needed, f"server {raw_id}")
    return server


async def create(ctx: AppContext, principal: Principal, body: ServerCreate) -> ServerOut:
    team_ref = team_service.owner_ref(principal, body.team, "server")
    async with ctx.session_factory() as s:
        team = await team_service.authorized_team(s, principal, team_ref, Role.ADMIN)
        if await repository.name_taken(s, team.id, body.name):
            raise Conflict(f"this team already has a server named {body.name!r}")
        server = Server(
            id=uuid.uuid4(),
            team_id=team.id,
            name=body.name,
            description=body.description,
            public_mcp=body.public_mcp,
        )
        s.add(server)
        try:
            await s.flush()
        except IntegrityError:
            raise Conflict(f"this team already has a server named {body.name!r}") from None
        await _compose(s, server.id, team.id, body)
        out = await _out(s, server)
        await s.commit()
    return out


async def get(ctx: AppContext, principal: Principal, raw_id: str) -> ServerOut:
    async with ctx.read_session_factory() as s:
        return await _out(s, await _visible(s, principal, raw_id, Role.VIEWER))


async def list_all(ctx: AppContext, principal: Principal) -> list[ServerOut]:
    async with ctx.read_session_factory() as s:
        return [await _out(s, server) for server in await repository.list_for(s, principal.team_id)]


async def update(ctx: AppContext, principal: Principal, raw_id: str, body: ServerPatch) -> ServerOut:
    async with ctx.session_factory() as s:
        server = await _visible(s, principal, raw_id, Role.ADMIN)
        if body.name is not None and body.name != server.name:
            if await repository.name_taken(s, server.team_id, body.name, but=server.id):
                raise Conflict(f"this team already has a server named {body.name!r}")
            server.name = body.name
        if "description" in body.model_fields_set:
            server.description = body.description
        if body.public_mcp is not None:
            server.public_mcp = body.public_mcp
        await _compose(s, server.id, server.team_id, body)
        server.updated_at = utcnow()
        await s.flush()
        out = await _out(s, server)
        await s.commit()
    return out


async def delete(ctx: AppContext, principal: Principal, raw_id: str) -> None:
    async with ctx.session_factory() as s:
        server = await _visible(s, principal, raw_id, Role.ADMIN)
        await repository.delete_server(s, server.id)
        await s.commit()


async def lookup(ctx: AppContext, raw_id: str) -> ServerSnapshot | None:
    """The server behind an MCP endpoint, as plain values (a short read session)."""
    try:
        server_id = uuid.UUID(raw_id)
    except ValueError:
        return None
    async with ctx.read_session_factory() as s:
        server = await repository.get(s, server_id)
    return snapshot(server) if server is not None else None
