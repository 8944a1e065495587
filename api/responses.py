"""What the API says it answers, for /openapi.json: the one error shape, the job answers, and the
`responses=` each route declares. api/errors.py renders the errors; this module only documents
them, so a client generated from the schema (or schemathesis) sees every status it can get."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    """Every error answer. Some carry more fields (`errors`, `job_id`, `status`)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="the kind of error, stable for programs: not_found, validation_error, ...")
    detail: str = Field(description="what went wrong and, where it can say, what to change")


class FieldError(BaseModel):
    path: str = Field(description="where in the request: body/arguments/text, query/limit, ...")
    message: str


class ValidationErrorBody(ErrorBody):
    # Absent when the check came after parsing (e.g. a tool's input_schema, a ref that is unknown).
    errors: list[FieldError] | None = Field(default=None, description="one entry per field refused")


class JobAccepted(BaseModel):
    """The job is queued or running; poll `Location` (GET /v1/jobs/{id}?wait=S) for its end."""

    job_id: str
    status: str = Field(description="queued or running")


class JobCompleted(BaseModel):
    job_id: str
    status: str = Field(description="completed")
    result: dict[str, Any] = Field(description="the MCP result as the backend sent it")


_STATUS_TEXT: dict[int, str] = {
    400: "A value the service cannot use (e.g. an invalid cursor, a NUL character in a string)",
    401: "Missing, invalid, expired or revoked bearer token",
    403: "The token's role may not do this",
    404: "Not found, or another team's private item",
    409: "Conflicts with the current state (a name taken, a job already finished)",
    413: "The request body is larger than MCPQ_MAX_BODY_BYTES",
    415: "The body was not sent as JSON: send it with Content-Type: application/json",
    422: "The request is not valid: `errors` lists each field refused",
    429: "The team has too many jobs in flight; retry after `Retry-After` seconds",
    502: "The backend MCP server failed, could not be reached, or does not speak MCP",
    503: "A backing service (PostgreSQL, Redis) is unavailable; retry",
    504: "The backend did not answer in time",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds", "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "seconds, when known", "schema": {"type": "string"}}},
}
_LOCATION = {"Location": {"description": "the job: /v1/jobs/{id}", "schema": {"type": "string"}}}

# Any route that takes a JSON body: too large, not JSON, not valid.
BODY = (413, 415, 422)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries for these error statuses, each with the JSON error shape."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "model": ValidationErrorBody if status == 422 else ErrorBody,
            "description": _STATUS_TEXT[status],
        }
        if status in _HEADERS:
            entry["headers"] = _HEADERS[status]
        documented[status] = entry
    return documented


# Every route behind authentication; added where the routers are included (api/main.py). 422 is
# here too so that no route documents FastAPI's default validation shape, which is not ours.
AUTHENTICATED = errors(401, 422, 503)


def job_call(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A synchronous call (tool call, resource read, prompt render): the result, 202 while the
    job still runs, or the job's failure (409 cancelled, 502 failed, 504 timed out) with its id."""
    return {
        200: {"model": JobCompleted, "description": "The job completed within timeout_s"},
        202: {
            "model": JobAccepted,
            "description": "Not done within timeout_s; the job keeps running",
            "headers": _LOCATION,
        },
        **errors(409, 502, 504, *statuses),
    }


def job_submit(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """An asynchronous submission: 202 and where to find the job."""
    return {
        202: {"model": JobAccepted, "description": "Queued", "headers": _LOCATION},
        **errors(*statuses),
    }


# DELETE /v1/jobs/{id} answers with the job's record either way.
JOB_CANCEL: dict[int | str, dict[str, Any]] = {
    200: {"model": dict[str, Any], "description": "Cancelled: the job's record"},
    202: {"model": dict[str, Any], "description": "Cancel requested, not yet confirmed: the job's record"},
    **errors(403, 404, 409),
}
