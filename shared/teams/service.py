"""Teams and their members. The platform admin creates and deletes teams; a team's admins manage it."""

from __future__ import annotations

import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth.schemas import Principal, Role
from shared.context import AppContext
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.models import Team, TeamMember, utcnow
from shared.teams import repository
from shared.teams.schemas import MemberAdd, MemberOut, TeamCreate, TeamOut, TeamUpdate


def to_out(team: Team) -> TeamOut:
    return TeamOut(
        id=team.id,
        name=team.name,
        description=team.description,
        created_at=team.created_at,
        updated_at=team.updated_at,
    )


def _member_out(m: TeamMember) -> MemberOut:
    return MemberOut(email=m.email, role=Role(m.role), created_at=m.created_at)


def owner_ref(principal: Principal, team: str | None, what: str) -> str:
    """The team a new item belongs to: the one named, else the caller's own. The platform admin
    has no team of its own, so it must name one."""
    ref = team or (str(principal.team_id) if principal.team_id else None)
    if ref is None:
        raise ValidationFailed(f"team: the platform admin must say which team owns the {what}")
    return ref


async def authorized_team(s: AsyncSession, principal: Principal, raw_id: str, needed: Role) -> Team:
    """The team `raw_id` (an id or a name) if the caller may act on it; 404 if it may not see it."""
    team = await repository.by_ref(s, raw_id)
    if team is None:
        raise NotFound(f"team {raw_id!r} not found")
    principal.authorize(team.id, needed, f"team {raw_id!r}")
    return team


async def create(ctx: AppContext, principal: Principal, body: TeamCreate) -> TeamOut:
    principal.require_platform()
    async with ctx.session_factory() as s:
        if await repository.name_taken(s, body.name):
            raise Conflict(f"a team named {body.name!r} already exists")
        team = Team(id=uuid.uuid4(), name=body.name, description=body.description)
        s.add(team)
        try:
            await s.commit()
        except IntegrityError:
            raise Conflict(f"a team named {body.name!r} already exists") from None
    return to_out(team)


async def list_all(ctx: AppContext, principal: Principal) -> list[TeamOut]:
    async with ctx.read_session_factory() as s:
        teams = await repository.list_teams(s, principal.team_id)
    return [to_out(t) for t in teams]


async def get(ctx: AppContext, principal: Principal, raw_id: str) -> TeamOut:
    async with ctx.read_session_factory() as s:
        return to_out(await authorized_team(s, principal, raw_id, Role.VIEWER))


async def update(ctx: AppContext, principal: Principal, raw_id: str, body: TeamUpdate) -> TeamOut:
    async with ctx.session_factory() as s:
        team = await authorized_team(s, principal, raw_id, Role.ADMIN)
        if body.name is not None and body.name != team.name:
            if await repository.name_taken(s, body.name):
                raise Conflict(f"a team named {body.name!r} already exists")
            team.name = body.name
        if "description" in body.model_fields_set:
            team.description = body.description
        team.updated_at = utcnow()
        try:
            await s.commit()
        except IntegrityError:
            raise Conflict(f"a team named {body.name!r} already exists") from None
    return to_out(team)


async def delete(ctx: AppContext, principal: Principal, raw_id: str) -> None:
    """Remove a team with its gateways, catalog, members and tokens (jobs in Redis age out)."""
    async with ctx.session_factory() as s:
        team = await authorized_team(s, principal, raw_id, Role.VIEWER)
        principal.require_platform()
        await repository.delete_team(s, team.id)
        await s.commit()
    await ctx.catalog_changed()
    await ctx.tokens_revoked()


async def add_member(ctx: AppContext, principal: Principal, raw_id: str, body: MemberAdd) -> MemberOut:
    async with ctx.session_factory() as s:
        team = await authorized_team(s, principal, raw_id, Role.ADMIN)
        if await repository.member(s, team.id, body.email) is not None:
            raise Conflict(f"{body.email} is already a member")
        member = TeamMember(team_id=team.id, email=body.email, role=body.role.value, created_at=utcnow())
        s.add(member)
        try:
            await s.commit()
        except IntegrityError:
            raise Conflict(f"{body.email} is already a member") from None
    return _member_out(member)


async def list_members(ctx: AppContext, principal: Principal, raw_id: str) -> list[MemberOut]:
    async with ctx.read_session_factory() as s:
        team = await authorized_team(s, principal, raw_id, Role.VIEWER)
        return [_member_out(m) for m in await repository.members(s, team.id)]


async def remove_member(ctx: AppContext, principal: Principal, raw_id: str, email: str) -> None:
    async with ctx.session_factory() as s:
        team = await authorized_team(s, principal, raw_id, Role.ADMIN)
        deleted = await repository.delete_member(s, team.id, email.lower())
        await s.commit()
    if not deleted:
        raise NotFound(f"{email} is not a member")
