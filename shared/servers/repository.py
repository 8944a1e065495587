"""Every query about virtual servers themselves lives here (what they compose: shared/items/repository.py)."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.models import Server


async def get(s: AsyncSession, server_id: uuid.UUID) -> Server | None:
    return await s.get(Server, server_id)


async def list_for(s: AsyncSession, team_id: uuid.UUID | None) -> list[Server]:
    stmt = select(Server).order_by(Server.name, Server.id)
    if team_id is not None:
        stmt = stmt.where(Server.team_id == team_id)
    return list(await s.scalars(stmt))


async def name_taken(s: AsyncSession, team_id: uuid.UUID, name: str, but: uuid.UUID | None = None) -> bool:
    stmt = select(Server.id).where(Server.team_id == team_id, Server.name == name)
    if but is not None:
        stmt = stmt.where(Server.id != but)
    return (await s.scalar(stmt)) is not None


async def delete_server(s: AsyncSession, server_id: uuid.UUID) -> bool:
    result = await s.execute(delete(Server).where(Server.id == server_id).returning(Server.id))
    return result.scalar_one_or_none() is not None
