"""One place that turns errors into the JSON error shape: {"error": <kind>, "detail": <message>}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.errors import MCPQError, Unauthorized

log = logging.getLogger(__name__)


def error_response(
    status: int, kind: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": kind, "detail": detail, **extra}, status_code=status, headers=headers)


async def _mcpq_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MCPQError)
    return error_response(exc.status_code, exc.kind, exc.detail, exc.headers, **exc.extra)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"path": "/".join(str(p) for p in e.get("loc", ())), "message": str(e.get("msg", ""))}
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"path": "", "message": "invalid request"}
    return error_response(422, "validation_error", f"{first['path']}: {first['message']}", errors=errors)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, kind, str(exc.detail))


# What a caller is told to wait before retrying when the database or Redis is away.
OUTAGE_RETRY_AFTER_S = 1


async def _dependency_down(_: Request, exc: Exception) -> JSONResponse:
    # The database or Redis is unreachable or out of connections: retryable, not our bug.
    log.warning("dependency unavailable: %s", exc)
    return error_response(
        503,
        "unavailable",
        "a backing service is unavailable; try again",
        {"Retry-After": str(OUTAGE_RETRY_AFTER_S)},
    )


async def _bad_data(_: Request, exc: Exception) -> JSONResponse:
    # The database refused a value (e.g. a NUL character in a string): the input was bad.
    return error_response(400, "bad_request", "the request contains a value that cannot be used")


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(MCPQError, _mcpq_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for outage in (
        OperationalError,
        SQLAlchemyTimeoutError,
        InterfaceError,
        RedisConnectionError,
        RedisTimeoutError,
    ):
        app.add_exception_handler(outage, _dependency_down)
    app.add_exception_handler(DataError, _bad_data)
    app.add_exception_handler(Exception, _unexpected)


__all__ = ["Unauthorized", "error_response", "install"]
