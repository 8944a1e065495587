"""Tools: the catalog, synchronous calls and async job submission."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.deps import ContextDep, PrincipalDep
from api.routers.jobs import accepted, call_response
from shared.jobs.schemas import JobStatus
from shared.tools import service as tool_service
from shared.tools.schemas import CallRequest, JobSubmitRequest, ToolOut, ToolPage

router = APIRouter(prefix="/v1/tools", tags=["tools"])


@router.get("")
async def list_tools(
    ctx: ContextDep,
    principal: PrincipalDep,
    gateway: str | None = None,
    limit: Annotated[int, Query(ge=1, le=tool_service.MAX_PAGE)] = 100,
    cursor: str | None = None,
) -> ToolPage:
    return await tool_service.list_page(ctx, principal, gateway=gateway, cursor=cursor, limit=limit)


@router.get("/{ref}")
async def get_tool(ref: str, ctx: ContextDep, principal: PrincipalDep) -> ToolOut:
    return await tool_service.get(ctx, principal, ref)


@router.post("/{ref}/call")
async def call_tool(ref: str, body: CallRequest, ctx: ContextDep, principal: PrincipalDep) -> JSONResponse:
    record = await tool_service.call(ctx, principal, ref, body.arguments, body.timeout_s)
    return call_response(record)


@router.post("/{ref}/jobs", status_code=202)
async def submit_job(
    ref: str, body: JobSubmitRequest, ctx: ContextDep, principal: PrincipalDep
) -> JSONResponse:
    job_id = await tool_service.submit(ctx, principal, ref, body.arguments)
    return accepted(job_id, JobStatus.QUEUED.value)
