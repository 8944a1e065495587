"""GET and DELETE /v1/jobs/{id}."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.deps import ContextDep, PrincipalDep
from api.responses import JOB_CANCEL, errors
from shared.errors import ValidationFailed
from shared.jobs.schemas import JobRecord, JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

# The HTTP status a synchronous call answers with when its job failed, by error type.
_FAILURE_STATUS = {"timeout": 504, "cancelled": 409}


def job_location(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


def accepted(record_id: str, status: str) -> JSONResponse:
    return JSONResponse(
        {"job_id": record_id, "status": status},
        status_code=202,
        headers={"Location": job_location(record_id)},
    )


def call_response(record: JobRecord) -> JSONResponse:
    """The answer to a synchronous call: the result, the failure, or 202 while it still runs."""
    if record.status is JobStatus.COMPLETED:
        return JSONResponse({"job_id": record.id, "status": record.status.value, "result": record.result})
    if not record.status.terminal:
        return accepted(record.id, record.status.value)
    error = record.error or {"type": "error", "message": "the job failed"}
    body: dict[str, Any] = {
        "error": error["type"],
        "detail": error["message"],
        "job_id": record.id,
        "status": record.status.value,
    }
    return JSONResponse(body, status_code=_FAILURE_STATUS.get(error["type"], 502))


@router.get("/{job_id}", responses=errors(403, 404, 422))
async def get_job(
    job_id: str,
    ctx: ContextDep,
    principal: PrincipalDep,
    wait: Annotated[float, Query(ge=0, description="long-poll up to this many seconds")] = 0.0,
) -> dict[str, Any]:
    if wait > ctx.settings.max_wait_s:
        raise ValidationFailed(f"wait may be at most {ctx.settings.max_wait_s}")
    return (await ctx.queue.get(job_id, principal, wait)).to_public()


@router.delete("/{job_id}", responses=JOB_CANCEL)
async def cancel_job(job_id: str, ctx: ContextDep, principal: PrincipalDep) -> JSONResponse:
    record = await ctx.queue.cancel(job_id, principal)
    return JSONResponse(record.to_public(), status_code=200 if record.status.terminal else 202)
