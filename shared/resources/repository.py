"""Every query about resources (and resource templates) lives here."""

from __future__ import annotations

import uuid

from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from shared.gateways.repository import visible_to
from shared.models import Gateway, Resource
from shared.pagination import Position


def _with_gateway(team_id: uuid.UUID | None) -> Select[Resource, Gateway]:
    return (
        select(Resource, Gateway).join(Gateway, Resource.gateway_id == Gateway.id).where(visible_to(team_id))
    )


async def by_id(
    s: AsyncSession, team_id: uuid.UUID | None, resource_id: uuid.UUID
) -> tuple[Resource, Gateway] | None:
    return (await s.execute(_with_gateway(team_id).where(Resource.id == resource_id))).tuples().first()


async def by_gateway_uri(
    s: AsyncSession, team_id: uuid.UUID | None, gateway: str, uri: str
) -> tuple[Resource, Gateway] | None:
    """The caller's own team's gateway of that name first, then the oldest public one."""
    stmt = (
        _with_gateway(team_id)
        .where(Gateway.name == gateway, Resource.uri == uri)
        .order_by((Gateway.team_id != team_id) if team_id else Gateway.created_at, Gateway.created_at)
        .limit(1)
    )
    return (await s.execute(stmt)).tuples().first()


async def page(
    s: AsyncSession, team_id: uuid.UUID | None, *, gateway: str | None, after: Position | None, limit: int
) -> list[tuple[Resource, Gateway]]:
    """Visible resources ordered by (gateway name, gateway id, uri), keyset-paginated after `after`."""
    stmt = _with_gateway(team_id).order_by(Gateway.name, Gateway.id, Resource.uri).limit(limit)
    if gateway is not None:
        stmt = stmt.where(Gateway.name == gateway)
    if after is not None:
        stmt = stmt.where(tuple_(Gateway.name, Gateway.id, Resource.uri) > tuple_(*after))
    return list((await s.execute(stmt)).tuples())
