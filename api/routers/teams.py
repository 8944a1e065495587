"""Teams and their members."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import ContextDep, PrincipalDep
from api.responses import BODY, errors
from shared.teams import service as team_service
from shared.teams.schemas import MemberAdd, MemberList, MemberOut, TeamCreate, TeamList, TeamOut, TeamUpdate

router = APIRouter(prefix="/v1/teams", tags=["teams"])


@router.post("", status_code=201, responses=errors(400, 403, 409, *BODY))
async def create_team(body: TeamCreate, ctx: ContextDep, principal: PrincipalDep) -> TeamOut:
    return await team_service.create(ctx, principal, body)


@router.get("")
async def list_teams(ctx: ContextDep, principal: PrincipalDep) -> TeamList:
    return TeamList(items=await team_service.list_all(ctx, principal))


@router.get("/{team_id}", responses=errors(400, 404))
async def get_team(team_id: str, ctx: ContextDep, principal: PrincipalDep) -> TeamOut:
    return await team_service.get(ctx, principal, team_id)


@router.patch("/{team_id}", responses=errors(400, 403, 404, 409, *BODY))
async def update_team(team_id: str, body: TeamUpdate, ctx: ContextDep, principal: PrincipalDep) -> TeamOut:
    return await team_service.update(ctx, principal, team_id, body)


@router.delete("/{team_id}", status_code=204, responses=errors(400, 403, 404))
async def delete_team(team_id: str, ctx: ContextDep, principal: PrincipalDep) -> Response:
    await team_service.delete(ctx, principal, team_id)
    return Response(status_code=204)


@router.post("/{team_id}/members", status_code=201, responses=errors(400, 403, 404, 409, *BODY))
async def add_member(team_id: str, body: MemberAdd, ctx: ContextDep, principal: PrincipalDep) -> MemberOut:
    return await team_service.add_member(ctx, principal, team_id, body)


@router.get("/{team_id}/members", responses=errors(400, 403, 404))
async def list_members(team_id: str, ctx: ContextDep, principal: PrincipalDep) -> MemberList:
    return MemberList(items=await team_service.list_members(ctx, principal, team_id))


@router.delete("/{team_id}/members/{email}", status_code=204, responses=errors(400, 403, 404))
async def remove_member(team_id: str, email: str, ctx: ContextDep, principal: PrincipalDep) -> Response:
    await team_service.remove_member(ctx, principal, team_id, email)
    return Response(status_code=204)
