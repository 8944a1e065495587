"""Resources: the catalog, synchronous reads and async read jobs.

`{ref}` is a resource id or `{gateway}:{uri}` (the URI may contain slashes, so it is a path
parameter; percent-encode what a URL cannot carry).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from api.deps import ContextDep, PrincipalDep
from api.responses import BODY, errors, job_call, job_submit
from api.routers.jobs import accepted, call_response
from shared.jobs.schemas import JobStatus
from shared.resources import service as resource_service
from shared.resources.schemas import ReadJobRequest, ReadRequest, ResourceOut, ResourcePage

router = APIRouter(prefix="/v1/resources", tags=["resources"])

# Documented with an example that names a real item in tests/fuzz (the gateway `demo`).
ResourceRef = Annotated[
    str,
    Path(
        description="the resource's id, or `{gateway}:{uri}` (percent-encode what a URL cannot carry)",
        examples=["demo:demo://readme"],
    ),
]


@router.get("", responses=errors(400, 422))
async def list_resources(
    ctx: ContextDep,
    principal: PrincipalDep,
    gateway: str | None = None,
    limit: Annotated[int, Query(ge=1, le=resource_service.MAX_PAGE)] = 100,
    cursor: str | None = None,
) -> ResourcePage:
    return await resource_service.list_page(ctx, principal, gateway=gateway, cursor=cursor, limit=limit)


@router.post("/{ref:path}/read", responses=job_call(400, 403, 404, 429, *BODY))
async def read_resource(
    ref: ResourceRef, body: ReadRequest, ctx: ContextDep, principal: PrincipalDep
) -> JSONResponse:
    record = await resource_service.read(ctx, principal, ref, body.uri, body.timeout_s)
    return call_response(record)


@router.post("/{ref:path}/jobs", status_code=202, responses=job_submit(400, 403, 404, 429, *BODY))
async def submit_read(
    ref: ResourceRef, body: ReadJobRequest, ctx: ContextDep, principal: PrincipalDep
) -> JSONResponse:
    job_id = await resource_service.submit(ctx, principal, ref, body.uri)
    return accepted(job_id, JobStatus.QUEUED.value)


@router.get("/{ref:path}", responses=errors(400, 404))
async def get_resource(ref: ResourceRef, ctx: ContextDep, principal: PrincipalDep) -> ResourceOut:
    return await resource_service.get(ctx, principal, ref)
