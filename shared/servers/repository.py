"""Every query about virtual servers and what they compose lives here."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Table, delete, insert, select
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


async def tools(s: AsyncSession, server_id: uuid.UUID) -> list[tuple[Tool, Gateway]]:
    stmt = (
        select(Tool, Gateway)
        .join(server_tools, server_tools.c.tool_id == Tool.id)
        .join(Gateway, Tool.gateway_id == Gateway.id)
        .where(server_tools.c.server_id == server_id)
        .order_by(server_tools.c.position)
    )
    return list((await s.execute(stmt)).tuples())


async def resources(s: AsyncSession, server_id: uuid.UUID) -> list[tuple[Resource, Gateway]]:
    stmt = (
        select(Resource, Gateway)
        .join(server_resources, server_resources.c.resource_id == Resource.id)
        .join(Gateway, Resource.gateway_id == Gateway.id)
        .where(server_resources.c.server_id == server_id)
        .order_by(server_resources.c.position)
    )
    return list((await s.execute(stmt)).tuples())


async def prompts(s: AsyncSession, server_id: uuid.UUID) -> list[tuple[Prompt, Gateway]]:
    stmt = (
        select(Prompt, Gateway)
        .join(server_prompts, server_prompts.c.prompt_id == Prompt.id)
        .join(Gateway, Prompt.gateway_id == Gateway.id)
        .where(server_prompts.c.server_id == server_id)
        .order_by(server_prompts.c.position)
    )
    return list((await s.execute(stmt)).tuples())


async def tool_named(s: AsyncSession, server_id: uuid.UUID, name: str) -> tuple[Tool, Gateway] | None:
    stmt = (
        select(Tool, Gateway)
        .join(server_tools, server_tools.c.tool_id == Tool.id)
        .join(Gateway, Tool.gateway_id == Gateway.id)
        .where(server_tools.c.server_id == server_id, Tool.name == name)
        .limit(1)
    )
    return (await s.execute(stmt)).tuples().first()


async def prompt_named(s: AsyncSession, server_id: uuid.UUID, name: str) -> tuple[Prompt, Gateway] | None:
    stmt = (
        select(Prompt, Gateway)
        .join(server_prompts, server_prompts.c.prompt_id == Prompt.id)
        .join(Gateway, Prompt.gateway_id == Gateway.id)
        .where(server_prompts.c.server_id == server_id, Prompt.name == name)
        .limit(1)
    )
    return (await s.execute(stmt)).tuples().first()


async def replace_members(
    s: AsyncSession, table: Table, server_id: uuid.UUID, item_ids: list[uuid.UUID]
) -> None:
    column = next(c.name for c in table.c if c.name not in ("server_id", "position"))
    await s.execute(delete(table).where(table.c.server_id == server_id))
    if item_ids:
        rows: list[dict[str, Any]] = [
            {"server_id": server_id, column: item_id, "position": float(i)}
            for i, item_id in enumerate(item_ids)
        ]
        await s.execute(insert(table), rows)


async def delete_server(s: AsyncSession, server_id: uuid.UUID) -> bool:
    result = await s.execute(delete(Server).where(Server.id == server_id).returning(Server.id))
    return result.scalar_one_or_none() is not None
