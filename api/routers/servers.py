"""Virtual servers: create, list, show, update, delete. Their MCP endpoint is api/mcp."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import ContextDep, PrincipalDep
from api.responses import BODY, errors
from shared.servers import service as server_service
from shared.servers.schemas import ServerCreate, ServerList, ServerOut, ServerPatch

router = APIRouter(prefix="/v1/servers", tags=["servers"])


@router.post("", status_code=201, responses=errors(400, 403, 404, 409, *BODY))
async def create_server(body: ServerCreate, ctx: ContextDep, principal: PrincipalDep) -> ServerOut:
    return await server_service.create(ctx, principal, body)


@router.get("")
async def list_servers(ctx: ContextDep, principal: PrincipalDep) -> ServerList:
    return ServerList(items=await server_service.list_all(ctx, principal))


@router.get("/{server_id}", responses=errors(400, 404))
async def get_server(server_id: str, ctx: ContextDep, principal: PrincipalDep) -> ServerOut:
    return await server_service.get(ctx, principal, server_id)


@router.patch("/{server_id}", responses=errors(400, 403, 404, 409, *BODY))
async def update_server(
    server_id: str, body: ServerPatch, ctx: ContextDep, principal: PrincipalDep
) -> ServerOut:
    return await server_service.update(ctx, principal, server_id, body)


@router.delete("/{server_id}", status_code=204, responses=errors(400, 403, 404))
async def delete_server(server_id: str, ctx: ContextDep, principal: PrincipalDep) -> Response:
    await server_service.delete(ctx, principal, server_id)
    return Response(status_code=204)
