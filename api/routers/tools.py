"""Tools: the catalog, synchronous calls and async job submission."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.deps import ContextDep, PrincipalDep
from api.routers.jobs import accepted, call_response
from shared.items import service as items
from shared.tools.kind import TOOLS
from shared.tools.schemas import CallRequest, JobSubmitRequest, ToolOut, ToolPage

router = APIRouter(prefix="/v1/tools", tags=["tools"])


@router.get("")
async def list_tools(
    ctx: ContextDep,
    principal: PrincipalDep,
    gateway: str | None = None,
    limit: Annotated[int, Query(ge=1, le=items.MAX_PAGE)] = 100,
    cursor: str | None = None,
) -> ToolPage:
    found, next_cursor = await items.list_page(
        ctx, principal, TOOLS, gateway=gateway, cursor=cursor, limit=limit
    )
    return ToolPage(items=found, next_cursor=next_cursor)


@router.get("/{ref}")
async def get_tool(ref: str, ctx: ContextDep, principal: PrincipalDep) -> ToolOut:
    return await items.get(ctx, principal, TOOLS, ref)


@router.post("/{ref}/call")
async def call_tool(ref: str, body: CallRequest, ctx: ContextDep, principal: PrincipalDep) -> JSONResponse:
    return call_response(await items.call(ctx, principal, TOOLS, ref, body.arguments, body.timeout_s))


@router.post("/{ref}/jobs", status_code=202)
async def submit_job(
    ref: str, body: JobSubmitRequest, ctx: ContextDep, principal: PrincipalDep
) -> JSONResponse:
    return accepted(await items.submit(ctx, principal, TOOLS, ref, body.arguments))
