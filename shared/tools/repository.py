"""Every query about tools lives here."""

from __future__ import annotations

import uuid

from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from shared.models import Gateway, Tool


def _with_gateway() -> Select[Tool, Gateway]:
    return select(Tool, Gateway).join(Gateway, Tool.gateway_id == Gateway.id)


async def by_id(s: AsyncSession, tool_id: uuid.UUID) -> tuple[Tool, Gateway] | None:
    return (await s.execute(_with_gateway().where(Tool.id == tool_id))).tuples().first()


async def by_qualified_name(s: AsyncSession, gateway: str, tool: str) -> tuple[Tool, Gateway] | None:
    stmt = _with_gateway().where(Gateway.name == gateway, Tool.name == tool)
    return (await s.execute(stmt)).tuples().first()


async def page(
    s: AsyncSession, *, gateway: str | None, after: tuple[str, str] | None, limit: int
) -> list[tuple[Tool, Gateway]]:
    """Tools ordered by (gateway name, tool name), keyset-paginated after `after`."""
    stmt = _with_gateway().order_by(Gateway.name, Tool.name).limit(limit)
    if gateway is not None:
        stmt = stmt.where(Gateway.name == gateway)
    if after is not None:
        stmt = stmt.where(tuple_(Gateway.name, Tool.name) > tuple_(*after))
    return list((await s.execute(stmt)).tuples())
