"""Every query about teams and their members lives here."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.ids import parse_uuid
from shared.models import Team, TeamMember


async def by_ref(s: AsyncSession, ref: str) -> Team | None:
    """A team by id or by name."""
    team_id = parse_uuid(ref)
    if team_id is not None:
        return await s.get(Team, team_id)
    return await s.scalar(select(Team).where(Team.name == ref))


async def name_taken(s: AsyncSession, name: str) -> bool:
    return (await s.scalar(select(Team.id).where(Team.name == name))) is not None


async def list_teams(s: AsyncSession, only: uuid.UUID | None) -> list[Team]:
    stmt = select(Team).order_by(Team.name)
    if only is not None:
        stmt = stmt.where(Team.id == only)
    return list(await s.scalars(stmt))


async def delete_team(s: AsyncSession, team_id: uuid.UUID) -> bool:
    result = await s.execute(delete(Team).where(Team.id == team_id).returning(Team.id))
    return result.scalar_one_or_none() is not None


async def members(s: AsyncSession, team_id: uuid.UUID) -> list[TeamMember]:
    stmt = select(TeamMember).where(TeamMember.team_id == team_id).order_by(TeamMember.email)
    return list(await s.scalars(stmt))


async def member(s: AsyncSession, team_id: uuid.UUID, email: str) -> TeamMember | None:
    return await s.get(TeamMember, (team_id, email))


async def delete_member(s: AsyncSession, team_id: uuid.UUID, email: str) -> bool:
    result = await s.execute(
        delete(TeamMember)
        .where(TeamMember.team_id == team_id, TeamMember.email == email)
        .returning(TeamMember.email)
    )
    return result.scalar_one_or_none() is not None
