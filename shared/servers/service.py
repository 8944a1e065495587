"""Virtual servers: compose tools, resources and prompts of any gateways a team sees."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth.schemas import Principal, Role
from shared.context import AppContext
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.ids import parse_uuid, require_uuid
from shared.items import repository as item_repository
from shared.items.kind import ItemKind
from shared.models import Server, utcnow
from shared.prompts.kind import PROMPTS
from shared.resources.kind import RESOURCES
from shared.servers import repository
from shared.servers.schemas import ServerCreate, ServerOut, ServerPatch, ServerSnapshot
from shared.teams import service as team_service
from shared.tools.kind import TOOLS

# Every kind a server composes, in the order its body and its output name them.
KINDS: tuple[ItemKind[Any, Any, Any, Any], ...] = (TOOLS, RESOURCES, PROMPTS)


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


async def _member_ids(
    s: AsyncSession, kind: ItemKind[Any, Any, Any, Any], team_id: uuid.UUID, refs: list[str]
) -> list[uuid.UUID]:
    """Each ref as the server's team sees it (422 if it sees no such item), refusing two items that
    MCP clients would see under one name (or URI)."""
    ids: list[uuid.UUID] = []
    exposed: dict[str, str] = {}
    for ref in refs:
        item_id = parse_uuid(ref)
        if item_id is not None:
            found = await item_repository.by_id(s, kind, team_id, item_id)
        else:
            gateway, sep, key = ref.partition(kind.separator)
            found = await item_repository.by_name(s, kind, team_id, gateway, key) if sep else None
        if found is None:
            raise ValidationFailed(
                f"{kind.plural}: no {kind.name} {ref!r} among those the server's team sees"
            )
        row, _ = found
        if row.id in ids:
            continue
        name = kind.key_of(row)
        if name in exposed:
            raise ValidationFailed(
                f"{kind.plural}: {ref!r} and {exposed[name]!r} would both appear to MCP clients as {name!r}"
            )
        exposed[name] = ref
        ids.append(row.id)
    return ids


async def _compose(
    s: AsyncSession, server_id: uuid.UUID, team_id: uuid.UUID, body: ServerCreate | ServerPatch
) -> set[str]:
    """Replace the server's items of each kind the body names; returns the lists that changed."""
    changed: set[str] = set()
    for kind in KINDS:
        refs: list[str] | None = getattr(body, kind.plural)
        if refs is not None:
            ids = await _member_ids(s, kind, team_id, refs)
            shown = await item_repository.on_servers(s, kind, [server_id])
            before = [row.id for row, _ in shown.get(server_id, [])]
            if ids != before:
                await item_repository.replace_members(s, kind, server_id, ids)
                changed.add(kind.plural)
    return changed


def to_out(server: Server, members: dict[str, list[Any]]) -> ServerOut:
    return ServerOut(
        id=server.id,
        team_id=server.team_id,
        name=server.name,
        description=server.description,
        public_mcp=server.public_mcp,
        mcp_path=mcp_path(server.id),
        created_at=server.created_at,
        updated_at=server.updated_at,
        **members,
    )


async def _load_out(s: AsyncSession, servers: list[Server]) -> list[ServerOut]:
    """The servers with their members: one query per kind, however many servers."""
    ids = [server.id for server in servers]
    by_kind = {kind.plural: await item_repository.on_servers(s, kind, ids) for kind in KINDS}
    return [
        to_out(
            server,
            {
                kind.plural: [kind.to_out(row, gw) for row, gw in by_kind[kind.plural].get(server.id, [])]
                for kind in KINDS
            },
        )
        for server in servers
    ]


async def _visible(s: AsyncSession, principal: Principal, raw_id: str, needed: Role) -> Server:
    server = await repository.get(s, require_uuid(raw_id, "server"))
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
        (out,) = await _load_out(s, [server])
        await s.commit()
    return out


async def get(ctx: AppContext, principal: Principal, raw_id: str) -> ServerOut:
    async with ctx.read_session_factory() as s:
        (out,) = await _load_out(s, [await _visible(s, principal, raw_id, Role.VIEWER)])
    return out


async def list_all(ctx: AppContext, principal: Principal) -> list[ServerOut]:
    async with ctx.read_session_factory() as s:
        return await _load_out(s, await repository.list_for(s, principal.team_id))


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
        changed = await _compose(s, server.id, server.team_id, body)
        server.updated_at = utcnow()
        await s.flush()
        (out,) = await _load_out(s, [server])
        await s.commit()
    # What MCP clients of the server resolve by name may have changed; its clients are told which
    # lists did (notifications/*/list_changed).
    await ctx.catalog_changed({server.id: changed})
    return out


async def delete(ctx: AppContext, principal: Principal, raw_id: str) -> None:
    async with ctx.session_factory() as s:
        server = await _visible(s, principal, raw_id, Role.ADMIN)
        await repository.delete_server(s, server.id)
        await s.commit()
    await ctx.catalog_changed()


async def lookup(ctx: AppContext, raw_id: str) -> ServerSnapshot | None:
    """The server behind an MCP endpoint, as plain values (a short read session)."""
    server_id = parse_uuid(raw_id)
    if server_id is None:
        return None
    async with ctx.read_session_factory() as s:
        server = await repository.get(s, server_id)
    return snapshot(server) if server is not None else None


async def backend_capabilities(ctx: AppContext, server_id: uuid.UUID) -> list[dict[str, Any]]:
    """What the server's backends declared they support (a short read session)."""
    async with ctx.read_session_factory() as s:
        return await repository.backend_capabilities(s, server_id)
