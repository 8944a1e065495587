"""Every query about virtual servers themselves lives here (what they compose: shared/items/repository.py)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, select, union
from sqlalchemy.ext.asyncio import AsyncSession

from shared.models import (
    Gateway,
    Prompt,
    Resource,
    Server,
    Tool,
    server_prompts,
    server_resources,
    server_tools,
)


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


async def backend_capabilities(s: AsyncSession, server_id: uuid.UUID) -> list[dict[str, Any]]:
    """The discovered capabilities of every gateway that has an item on the server (one query)."""
    gateway_ids = union(
        select(Tool.gateway_id).join(server_tools).where(server_tools.c.server_id == server_id),
        select(Resource.gateway_id).join(server_resources).where(server_resources.c.server_id == server_id),
        select(Prompt.gateway_id).join(server_prompts).where(server_prompts.c.server_id == server_id),
    )
    stmt = select(Gateway.capabilities).where(
        Gateway.id.in_(gateway_ids.scalar_subquery()), Gateway.capabilities.is_not(None)
    )
    return [caps for caps in await s.scalars(stmt) if caps]
