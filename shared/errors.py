"""One error family. Each error knows its HTTP status and its kind; one handler renders them."""

from __future__ import annotations

from typing import Any


class MCPQError(Exception):
    status_code: int = 500
    kind: str = "internal_error"

    def __init__(
        self, detail: str, *, extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}
        self.headers = headers or {}


class BadRequest(MCPQError):
    status_code = 400
    kind = "bad_request"


class Unauthorized(MCPQError):
    status_code = 401
    kind = "unauthorized"


class Forbidden(MCPQError):
    """The caller may see the item but its role does not allow the action."""

    status_code = 403
    kind = "forbidden"


class NotFound(MCPQError):
    status_code = 404
    kind = "not_found"


class Conflict(MCPQError):
    status_code = 409
    kind = "conflict"


class PayloadTooLarge(MCPQError):
    status_code = 413
    kind = "payload_too_large"


class ValidationFailed(MCPQError):
    status_code = 422
    kind = "validation_error"


class InvalidArguments(ValidationFailed):
    """Tool arguments that fail the tool's input_schema."""

    kind = "invalid_arguments"


class IdempotencyKeyReused(ValidationFailed):
    """An Idempotency-Key sent again with a different request."""

    kind = "idempotency_key_reused"


class TooManyRequests(MCPQError):
    status_code = 429
    kind = "too_many_requests"


class BackendError(MCPQError):
    """The backend MCP server could not be reached or spoke badly."""

    status_code = 502
    kind = "backend_error"


class ServiceUnavailable(MCPQError):
    status_code = 503
    kind = "unavailable"


class GatewayTimeout(MCPQError):
    status_code = 504
    kind = "timeout"
