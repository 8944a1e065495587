"""Prompts: the catalog, synchronous renders and async render jobs. `{ref}` is a prompt id or
`{gateway}.{prompt}`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.deps import ContextDep, PrincipalDep
from api.routers.jobs import accepted, call_response
from shared.jobs.schemas import JobStatus
from shared.prompts import service as prompt_service
from shared.prompts.schemas import PromptOut, PromptPage, RenderJobRequest, RenderRequest

router = APIRouter(prefix="/v1/prompts", tags=["prompts"])


@router.get("")
async def list_prompts(
    ctx: ContextDep,
    principal: PrincipalDep,
    gateway: str | None = None,
    limit: Annotated[int, Query(ge=1, le=prompt_service.MAX_PAGE)] = 100,
    cursor: str | None = None,
) -> PromptPage:
    return await prompt_service.list_page(ctx, principal, gateway=gateway, cursor=cursor, limit=limit)


@router.get("/{ref}")
async def get_prompt(ref: str, ctx: ContextDep, principal: PrincipalDep) -> PromptOut:
    return await prompt_service.get(ctx, principal, ref)


@router.post("/{ref}/render")
async def render_prompt(
    ref: str, body: RenderRequest, ctx: ContextDep, principal: PrincipalDep
) -> JSONResponse:
    record = await prompt_service.render(ctx, principal, ref, body.arguments, body.timeout_s)
    return call_response(record)


@router.post("/{ref}/jobs", status_code=202)
async def submit_render(
    ref: str, body: RenderJobRequest, ctx: ContextDep, principal: PrincipalDep
) -> JSONResponse:
    job_id = await prompt_service.submit(ctx, principal, ref, body.arguments)
    return accepted(job_id, JobStatus.QUEUED.value)
