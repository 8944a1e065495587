"""Tools: the catalog, synchronous calls and async job submission."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from api.deps import ContextDep, PrincipalDep
from api.responses import BODY, errors, job_call, job_submit
from api.routers.jobs import accepted, call_response
from shared.jobs.schemas import JobStatus
from shared.tools import service as tool_service
from shared.tools.schemas import CallRequest, JobSubmitRequest, ToolOut, ToolPage

router = APIRouter(prefix="/v1/tools", tags=["tools"])

# Documented with an example that names a real item in tests/fuzz (the gateway `demo`).
ToolRef = Annotated[str, Path(description="the tool's id, or `{gateway}.{tool}`", examples=["demo.echo"])]


@router.get("", responses=errors(400, 422))
async def list_tools(
    ctx: ContextDep,
    principal: PrincipalDep,
    gateway: str | None = None,
    limit: Annotated[int, Query(ge=1, le=tool_service.MAX_PAGE)] = 100,
    cursor: str | None = None,
) -> ToolPage:
    return await tool_service.list_page(ctx, principal, gateway=gateway, cursor=cursor, limit=limit)


@router.get("/{ref}", responses=errors(400, 404))
async def get_tool(ref: ToolRef, ctx: ContextDep, principal: PrincipalDep) -> ToolOut:
    return await tool_service.get(ctx, principal, ref)


@router.post("/{ref}/call", responses=job_call(400, 403, 404, 429, *BODY))
async def call_tool(
    ref: ToolRef, body: CallRequest, ctx: ContextDep, principal: PrincipalDep
) -> JSONResponse:
    record = await tool_service.call(ctx, principal, ref, body.arguments, body.timeout_s)
    return call_response(record)


@router.post("/{ref}/jobs", status_code=202, responses=job_submit(400, 403, 404, 429, *BODY))
async def submit_job(
    ref: ToolRef, body: JobSubmitRequest, ctx: ContextDep, principal: PrincipalDep
) -> JSONResponse:
    job_id = await tool_service.submit(ctx, principal, ref, body.arguments)
    return accepted(job_id, JobStatus.QUEUED.value)
