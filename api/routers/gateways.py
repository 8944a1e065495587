"""Gateways: register (discovery on a worker), list, show, refresh, delete."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import QueueDep, SessionFactoryDep, SettingsDep
from shared.gateways import service as gateway_service
from shared.gateways.schemas import GatewayCreate, GatewayList, GatewayOut

router = APIRouter(prefix="/v1/gateways", tags=["gateways"])


@router.post("", status_code=201)
async def create_gateway(
    body: GatewayCreate, sf: SessionFactoryDep, queue: QueueDep, settings: SettingsDep
) -> GatewayOut:
    return await gateway_service.register(sf, queue, settings, body)


@router.get("")
async def list_gateways(sf: SessionFactoryDep) -> GatewayList:
    return GatewayList(items=await gateway_service.list_all(sf))


@router.get("/{gateway_id}")
async def get_gateway(gateway_id: str, sf: SessionFactoryDep) -> GatewayOut:
    return await gateway_service.get(sf, gateway_id)


@router.delete("/{gateway_id}", status_code=204)
async def delete_gateway(gateway_id: str, sf: SessionFactoryDep) -> Response:
    await gateway_service.delete(sf, gateway_id)
    return Response(status_code=204)


@router.post("/{gateway_id}/refresh")
async def refresh_gateway(
    gateway_id: str, sf: SessionFactoryDep, queue: QueueDep, settings: SettingsDep
) -> GatewayOut:
    return await gateway_service.refresh(sf, queue, settings, gateway_id)
