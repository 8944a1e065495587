"""Resources: the catalog, synchronous reads and async read jobs.

`{ref}` is a resource id or `{gateway}:{uri}` (the URI may contain slashes, so it is a path
parameter; percent-encode what a URL cannot carry).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.deps import ContextDep, PrincipalDep
from api.routers.jobs import accepted, call_response
from shared.items import service as items
from shared.resources.kind import RESOURCES
from shared.resources.schemas import ReadJobRequest, ReadRequest, ResourceOut, ResourcePage

router = APIRouter(prefix="/v1/resources", tags=["resources"])


@router.get("")
async def list_resources(
    ctx: ContextDep,
    principal: PrincipalDep,
    gateway: str | None = None,
    limit: Annotated[int, Query(ge=1, le=items.MAX_PAGE)] = 100,
    cursor: str | None = None,
) -> ResourcePage:
    found, next_cursor = await items.list_page(
        ctx, principal, RESOURCES, gateway=gateway, cursor=cursor, limit=limit
    )
    return ResourcePage(items=found, next_cursor=next_cursor)


@router.post("/{ref:path}/read")
async def read_resource(
    ref: str, body: ReadRequest, ctx: ContextDep, principal: PrincipalDep
) -> JSONResponse:
    return call_response(await items.call(ctx, principal, RESOURCES, ref, body.uri, body.timeout_s))


@router.post("/{ref:path}/jobs", status_code=202)
async def submit_read(
    ref: str, body: ReadJobRequest, ctx: ContextDep, principal: PrincipalDep
) -> JSONResponse:
    return accepted(await items.submit(ctx, principal, RESOURCES, ref, body.uri))


@router.get("/{ref:path}")
async def get_resource(ref: str, ctx: ContextDep, principal: PrincipalDep) -> ResourceOut:
    return await items.get(ctx, principal, RESOURCES, ref)
