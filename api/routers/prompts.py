"""Prompts: the catalog, synchronous renders and async render jobs. `{ref}` is a prompt id or
`{gateway}.{prompt}`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.deps import ContextDep, PrincipalDep
from api.routers.jobs import accepted, call_response
from shared.items import service as items
from shared.prompts.kind import PROMPTS
from shared.prompts.schemas import PromptOut, PromptPage, RenderJobRequest, RenderRequest

router = APIRouter(prefix="/v1/prompts", tags=["prompts"])


@router.get("")
async def list_prompts(
    ctx: ContextDep,
    principal: PrincipalDep,
    gateway: str | None = None,
    limit: Annotated[int, Query(ge=1, le=items.MAX_PAGE)] = 100,
    cursor: str | None = None,
) -> PromptPage:
    found, next_cursor = await items.list_page(
        ctx, principal, PROMPTS, gateway=gateway, cursor=cursor, limit=limit
    )
    return PromptPage(items=found, next_cursor=next_cursor)


@router.get("/{ref}")
async def get_prompt(ref: str, ctx: ContextDep, principal: PrincipalDep) -> PromptOut:
    return await items.get(ctx, principal, PROMPTS, ref)


@router.post("/{ref}/render")
async def render_prompt(
    ref: str, body: RenderRequest, ctx: ContextDep, principal: PrincipalDep
) -> JSONResponse:
    return call_response(await items.call(ctx, principal, PROMPTS, ref, body.arguments, body.timeout_s))


@router.post("/{ref}/jobs", status_code=202)
async def submit_render(
    ref: str, body: RenderJobRequest, ctx: ContextDep, principal: PrincipalDep
) -> JSONResponse:
    return accepted(await items.submit(ctx, principal, PROMPTS, ref, body.arguments))
