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
from starlette.routing import Match

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


# Where a body model has this field, an unknown top-level field is most likely an argument sent
# without its wrapper: say so.
_WRAPPER = "arguments"
_ITEM_BY_TAG = {"tools": "tool", "prompts": "prompt"}
JSON_HINT = "send the body as JSON with Content-Type: application/json"


def _body_fields(request: Request) -> set[str]:
    """The top-level fields of the route's body model (empty if it has none)."""
    route = request.scope.get("route")
    body = getattr(route, "body_field", None)
    model = getattr(getattr(body, "field_info", None), "annotation", None)
    fields = getattr(model, "model_fields", None)
    return set(fields) if isinstance(fields, dict) else set()


def _json_position(doc: Any, pos: int) -> str:
    if not isinstance(doc, str):
        return f"character {pos}"
    line = doc.count("\n", 0, pos) + 1
    column = pos - (doc.rfind("\n", 0, pos) + 1) + 1
    return f"character {pos} (line {line}, column {column})"


def _message(request: Request, exc: RequestValidationError, error: dict[str, Any]) -> str:
    """Pydantic's message, rewritten where it does not say what to change."""
    loc = tuple(error.get("loc", ()))
    kind = error.get("type")
    if kind == "json_invalid" and len(loc) == 2:
        reason = (error.get("ctx") or {}).get("error", "invalid JSON")
        return f"invalid JSON at {_json_position(exc.body, int(loc[1]))}: {reason}"
    if kind == "missing" and loc == ("body",):
        return f"this request needs a JSON body ({{}} if there is nothing to set); {JSON_HINT}"
    if kind == "extra_forbidden" and len(loc) == 2 and loc[0] == "body":
        message = f"unknown field {loc[1]!r}"
        if _WRAPPER in _body_fields(request):
            route = request.scope.get("route")
            tags = getattr(route, "tags", None) or [""]
            item = _ITEM_BY_TAG.get(str(tags[0]), "item")
            message += f'; put the {item}\'s arguments under "{_WRAPPER}": {{...}}'
        return message
    return str(error.get("msg", ""))


def _path(error: dict[str, Any]) -> str:
    loc = error.get("loc", ())
    if error.get("type") == "json_invalid":
        return "body"  # its second part is a character position, which the message states
    return "/".join(str(p) for p in loc)


def _sent_without_json(exc: RequestValidationError) -> bool:
    """FastAPI hands the body on as raw bytes when its Content-Type is not JSON; the model then
    refuses bytes. That is a media type problem, not a field problem."""
    return any(
        tuple(e.get("loc", ())) == ("body",) and isinstance(e.get("input"), bytes) for e in exc.errors()
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if _sent_without_json(exc):
        sent = request.headers.get("content-type") or "no Content-Type"
        return error_response(415, "unsupported_media_type", f"{JSON_HINT} (got {sent})")
    errors = [{"path": _path(e), "message": _message(request, exc, e)} for e in exc.errors()]
    first = errors[0] if errors else {"path": "", "message": "invalid request"}
    return error_response(422, "validation_error", f"{first['path']}: {first['message']}", errors=errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
        # FastAPI could not decode the body to parse it as JSON.
        bad = exc.__cause__
        message = f"the body is not UTF-8 (byte {bad.start}); send JSON text encoded as UTF-8"
        return error_response(
            422, "validation_error", f"body: {message}", errors=[{"path": "body", "message": message}]
        )
    kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return error_response(exc.status_code, kind, str(exc.detail), headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method the path takes (RFC 9110 asks a 405 to list them). Starlette's own Allow
    names only the first route that matched the path; GET and POST /v1/gateways are two."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    )


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
