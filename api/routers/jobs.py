"""GET /v1/jobs (the newest jobs the caller may see), GET and DELETE /v1/jobs/{id}, and
POST /v1/jobs/{id}/input (answers to what the job's backend asked)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ContextDep, PrincipalDep
from api.responses import BODY, JOB_CANCEL, errors
from shared.items import service as items
from shared.jobs.schemas import JobRecord, JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

# The HTTP status a synchronous call answers with when its job failed, by error type.
_FAILURE_STATUS = {"timeout": 504, "cancelled": 409}


def job_location(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


def accepted(record: JobRecord) -> JSONResponse:
    return JSONResponse(
        {"job_id": record.id, "status": record.status.value},
        status_code=202,
        headers={"Location": job_location(record.id)},
    )


def call_response(record: JobRecord) -> JSONResponse:
    """The answer to a synchronous call: the result, the failure, or 202 while it still runs."""
    if record.status is JobStatus.COMPLETED:
        return JSONResponse({"job_id": record.id, "status": record.status.value, "result": record.result})
    if not record.status.terminal:
        return accepted(record)
    error = record.error or {"type": "error", "message": "the job failed"}
    body: dict[str, Any] = {
        "error": error["type"],
        "detail": error["message"],
        "job_id": record.id,
        "status": record.status.value,
    }
    return JSONResponse(body, status_code=_FAILURE_STATUS.get(error["type"], 502))


# The most jobs one page lists.
MAX_PAGE = 200


class JobPage(BaseModel):
    # Each job as GET /v1/jobs/{id} shows it, less its result (read that by id).
    items: list[dict[str, Any]]
    next_cursor: str | None


@router.get("", responses=errors(400, 403, 422))
async def list_jobs(
    ctx: ContextDep,
    principal: PrincipalDep,
    status: Annotated[list[JobStatus] | None, Query(description="only jobs in these states")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: str | None = None,
) -> JobPage:
    """The newest jobs of the caller's team (every team's for the platform admin), newest first;
    the most recent 1000 per team are kept for listing."""
    records, next_cursor = await ctx.queue.recent(principal, frozenset(status or ()), limit, cursor)
    summaries = [{k: v for k, v in r.to_public().items() if k != "result"} for r in records]
    return JobPage(items=summaries, next_cursor=next_cursor)


@router.get("/{job_id}", responses=errors(403, 404, 422))
async def get_job(
    job_id: str,
    ctx: ContextDep,
    principal: PrincipalDep,
    wait: Annotated[float, Query(ge=0, description="long-poll up to this many seconds")] = 0.0,
) -> dict[str, Any]:
    wait = items.wait_limit(ctx.settings, wait, "wait")
    # A long poll ends at a new question too: the caller is the one to answer it.
    return (await ctx.queue.get(job_id, principal, wait, new_question=True)).to_public()


class InputAnswers(BaseModel):
    """Answers to an input_required job's `input_requests`, by the same keys: each
    `{"result": <the MCP result>}` (an `ElicitResult` for `elicitation/create`, a
    `CreateMessageResult` for `sampling/createMessage`) or `{"error": {"code", "message"}}`."""

    model_config = ConfigDict(extra="forbid")
    responses: dict[str, dict[str, Any]] = Field(min_length=1)


@router.post("/{job_id}/input", responses=errors(403, 404, 409, *BODY))
async def answer_job(
    job_id: str, body: InputAnswers, ctx: ContextDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Answer what the job's backend asked (`input_requests` of GET /v1/jobs/{id}); the job
    goes on. 409 if it is not waiting for input; 422 for a key it did not ask or a bad answer."""
    await ctx.queue.answer(job_id, principal, body.responses)
    return (await ctx.queue.get(job_id, principal)).to_public()


@router.delete("/{job_id}", responses=JOB_CANCEL)
async def cancel_job(job_id: str, ctx: ContextDep, principal: PrincipalDep) -> JSONResponse:
    record = await ctx.queue.cancel(job_id, principal)
    return JSONResponse(record.to_public(), status_code=200 if record.status.terminal else 202)
