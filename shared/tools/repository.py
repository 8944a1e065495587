"""Every query about tools lives here."""

from __future__ import annotations

import uuid

from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from shared.gateways.repository import visible_to
from shared.models import Gateway, Tool
from shared.pagination import Position

# A keyset position: (gateway name, gateway id, tool name). Gateway names are unique per team
# only, so the id breaks ties between same-named gateways of different teams.


def _with_gateway(team_id: uuid.UUID | None) -> Select[Tool, Gateway]:
    """Tools of the gateways a caller of `team_id` sees (None: all)."""
    return select(Tool, Gateway).join(Gateway, Tool.gateway_id == Gateway.id).where(visible_to(team_id))


async def by_id(
    s: AsyncSession, team_id: uuid.UUID | None, tool_id: uuid.UUID
) -> tuple[Tool, Gateway] | None:
    return (await s.execute(_with_gateway(team_id).where(Tool.id == tool_id))).tuples().first()


async def by_qualified_name(
    s: AsyncSession, team_id: uuid.UUID | None, gateway: str, tool: str
) -> tuple[Tool, Gateway] | None:
    """The caller's own team's gateway of that name first, then the oldest public one."""
    stmt = (
        _with_gateway(team_id)
        .where(Gateway.name == gateway, Tool.name == tool)
        .order_by((Gateway.team_id != team_id) if team_id else Gateway.created_at, Gateway.created_at)
        .limit(1)
    )
    return (await s.execute(stmt)).tuples().first()


async def page(
    s: AsyncSession, team_id: uuid.UUID | None, *, gateway: str | None, after: Position | None, limit: int
) -> list[tuple[Tool, Gateway]]:
    """Visible tools ordered by (gateway name, gateway id, tool name), keyset-paginated after `after`."""
    stmt = _with_gateway(team_id).order_by(Gateway.name, Gateway.id, Tool.name).limit(limit)
    if gateway is not None:
        stmt = stmt.where(Gateway.name == gateway)
    if after is not None:
        stmt = stmt.where(tuple_(Gateway.name, Gateway.id, Tool.name) > tuple_(*after))
    return list((await s.execute(stmt)).tuples())
