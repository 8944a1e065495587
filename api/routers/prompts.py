"""Prompts: the catalog, synchronous renders and async render jobs. `{ref}` is a prompt id or
`{gateway}.{prompt}`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from api.deps import ContextDep, PrincipalDep
from api.responses import BODY, errors, job_call, job_submit
from api.routers.jobs import accepted, call_response
from shared.jobs.schemas import JobStatus
from shared.prompts import service as prompt_service
from shared.prompts.schemas import PromptOut, PromptPage, RenderJobRequest, RenderRequest

router = APIRouter(prefix="/v1/prompts", tags=["prompts"])

# Documented with an example that names a real item in tests/fuzz (the gateway `demo`).
PromptRef = Annotated[
    str, Path(description="the prompt's id, or `{gateway}.{prompt}`", examples=["demo.greet"])
]


@router.get("", responses=errors(400, 422))
async def list_prompts(
    ctx: ContextDep,
    principal: PrincipalDep,
    gateway: str | None = None,
    limit: Annotated[int, Query(ge=1, le=prompt_service.MAX_PAGE)] = 100,
    cursor: str | None = None,
) -> PromptPage:
    return await prompt_service.list_page(ctx, principal, gateway=gateway, cursor=cursor, limit=limit)


@router.get("/{ref}", responses=errors(400, 404))
async def get_prompt(ref: PromptRef, ctx: ContextDep, principal: PrincipalDep) -> PromptOut:
    return await prompt_service.get(ctx, principal, ref)


@router.post("/{ref}/render", responses=job_call(400, 403, 404, 429, *BODY))
async def render_prompt(
    ref: PromptRef, body: RenderRequest, ctx: ContextDep, principal: PrincipalDep
) -> JSONResponse:
    record = await prompt_service.render(ctx, principal, ref, body.arguments, body.timeout_s)
    return call_response(record)


@router.post("/{ref}/jobs", status_code=202, responses=job_submit(400, 403, 404, 429, *BODY))
async def submit_render(
    ref: PromptRef, body: RenderJobRequest, ctx: ContextDep, principal: PrincipalDep
) -> JSONResponse:
    job_id = await prompt_service.submit(ctx, principal, ref, body.arguments)
    return accepted(job_id, JobStatus.QUEUED.value)
