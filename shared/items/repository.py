"""Every query about catalog items (tools, resources, prompts) lives here, written once for all kinds."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import Select, delete, insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from shared.gateways.repository import visible_to
from shared.items.kind import ItemKind, Row
from shared.models import Gateway, Resource
from shared.pagination import Position

AnyKind = ItemKind[Row, Any, Any, Any]


def _with_gateway(kind: AnyKind[Row]) -> Select[Row, Gateway]:
    model = kind.model
    return select(model, Gateway).join(Gateway, model.gateway_id == Gateway.id)


def _visible(kind: AnyKind[Row], team_id: uuid.UUID | None) -> Select[Row, Gateway]:
    """Items of the gateways a caller of `team_id` sees (None: all)."""
    return _with_gateway(kind).where(visible_to(team_id))


async def by_id(
    s: AsyncSession, kind: AnyKind[Row], team_id: uuid.UUID | None, item_id: uuid.UUID
) -> tuple[Row, Gateway] | None:
    return (await s.execute(_visible(kind, team_id).where(kind.model.id == item_id))).tuples().first()


async def by_name(
    s: AsyncSession, kind: AnyKind[Row], team_id: uuid.UUID | None, gateway: str, key: str
) -> tuple[Row, Gateway] | None:
    """The caller's own team's gateway of that name first, then the oldest public one."""
    stmt = (
        _visible(kind, team_id)
        .where(Gateway.name == gateway, kind.key == key)
        .order_by((Gateway.team_id != team_id) if team_id else Gateway.created_at, Gateway.created_at)
        .limit(1)
    )
    return (await s.execute(stmt)).tuples().first()


async def page(
    s: AsyncSession,
    kind: AnyKind[Row],
    team_id: uuid.UUID | None,
    *,
    gateway: str | None,
    after: Position | None,
    limit: int,
) -> list[tuple[Row, Gateway]]:
    """Visible items ordered by (gateway name, gateway id, key), keyset-paginated after `after`."""
    stmt = _visible(kind, team_id).order_by(Gateway.name, Gateway.id, kind.key).limit(limit)
    if gateway is not None:
        stmt = stmt.where(Gateway.name == gateway)
    if after is not None:
        stmt = stmt.where(tuple_(Gateway.name, Gateway.id, kind.key) > tuple_(*after))
    return list((await s.execute(stmt)).tuples())


def _members(kind: AnyKind[Row]) -> Select[Row, Gateway]:
    table = kind.members
    return _with_gateway(kind).join(table, table.c[kind.member_column] == kind.model.id)


async def page_on_server(
    s: AsyncSession,
    kind: AnyKind[Row],
    server_id: uuid.UUID,
    *,
    after: tuple[float, uuid.UUID] | None,
    limit: int,
    templates: bool | None = None,
) -> list[tuple[Row, Gateway, float]]:
    """A virtual server's items of this kind in the server's order, with their positions,
    keyset-paginated after (position, item id). `templates` (resources): only resource templates,
    or only plain resources."""
    table = kind.members
    position, item_id = table.c.position, table.c[kind.member_column]
    stmt = (
        _members(kind)
        .add_columns(position)
        .where(table.c.server_id == server_id)
        .order_by(position, item_id)
        .limit(limit)
    )
    if templates is not None:
        stmt = stmt.where(Resource.is_template.is_(templates))
    if after is not None:
        stmt = stmt.where(tuple_(position, item_id) > tuple_(*after))
    return list((await s.execute(stmt)).tuples())


async def on_servers(
    s: AsyncSession, kind: AnyKind[Row], server_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[tuple[Row, Gateway]]]:
    """The items of many servers in one query."""
    table = kind.members
    stmt = (
        _members(kind)
        .add_columns(table.c.server_id)
        .where(table.c.server_id.in_(server_ids))
        .order_by(table.c.server_id, table.c.position)
    )
    found: defaultdict[uuid.UUID, list[tuple[Row, Gateway]]] = defaultdict(list)
    for row, gateway, server_id in (await s.execute(stmt)).tuples():
        found[server_id].append((row, gateway))
    return found


async def named_on_server(
    s: AsyncSession, kind: AnyKind[Row], server_id: uuid.UUID, name: str
) -> list[tuple[Row, Gateway]]:
    """The server's items that may answer to `name` (see ItemKind.on_server), in the server's order."""
    table = kind.members
    stmt = (
        _members(kind)
        .where(table.c.server_id == server_id, kind.server_filter(name))
        .order_by(table.c.position)
    )
    return list((await s.execute(stmt)).tuples())


async def replace_members(
    s: AsyncSession, kind: AnyKind[Row], server_id: uuid.UUID, item_ids: list[uuid.UUID]
) -> None:
    table = kind.members
    await s.execute(delete(table).where(table.c.server_id == server_id))
    if item_ids:
        rows: list[dict[str, Any]] = [
            {"server_id": server_id, kind.member_column: item_id, "position": float(i)}
            for i, item_id in enumerate(item_ids)
        ]
        await s.execute(insert(table), rows)
