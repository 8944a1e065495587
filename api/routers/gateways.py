"""Gateways: register (discovery on a worker), list, show, change, refresh, delete."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import ContextDep, PrincipalDep
from api.responses import BODY, errors
from shared.gateways import service as gateway_service
from shared.gateways.schemas import GatewayCreate, GatewayList, GatewayOut, GatewayUpdate

router = APIRouter(prefix="/v1/gateways", tags=["gateways"])


@router.post("", status_code=201, responses=errors(400, 403, 404, 409, 429, 502, 504, *BODY))
async def create_gateway(body: GatewayCreate, ctx: ContextDep, principal: PrincipalDep) -> GatewayOut:
    return await gateway_service.register(ctx, principal, body)


@router.get("")
async def list_gateways(ctx: ContextDep, principal: PrincipalDep) -> GatewayList:
    return GatewayList(items=await gateway_service.list_all(ctx, principal))


@router.get("/{gateway_id}", responses=errors(400, 404))
async def get_gateway(gateway_id: str, ctx: ContextDep, principal: PrincipalDep) -> GatewayOut:
    return await gateway_service.get(ctx, principal, gateway_id)


@router.patch("/{gateway_id}", responses=errors(400, 403, 404, 422, 429, 502, 504, *BODY))
async def update_gateway(
    gateway_id: str, body: GatewayUpdate, ctx: ContextDep, principal: PrincipalDep
) -> GatewayOut:
    return await gateway_service.update(ctx, principal, gateway_id, body)


@router.delete("/{gateway_id}", status_code=204, responses=errors(400, 403, 404))
async def delete_gateway(gateway_id: str, ctx: ContextDep, principal: PrincipalDep) -> Response:
    await gateway_service.delete(ctx, principal, gateway_id)
    return Response(status_code=204)


@router.post("/{gateway_id}/refresh", responses=errors(400, 403, 404, 422, 429, 502, 504))
async def refresh_gateway(gateway_id: str, ctx: ContextDep, principal: PrincipalDep) -> GatewayOut:
    return await gateway_service.refresh(ctx, principal, gateway_id)
