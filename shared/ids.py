"""The one way ids from callers are parsed."""

from __future__ import annotations

import uuid

from shared.errors import NotFound


def parse_uuid(raw: str) -> uuid.UUID | None:
    """`raw` as a UUID, or None if it is not one (then it may be a name)."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


def require_uuid(raw: str, what: str) -> uuid.UUID:
    """`raw` as a UUID; 404 if it is not one (no item has such an id)."""
    parsed = parse_uuid(raw)
    if parsed is None:
        raise NotFound(f"{what} {raw!r} not found")
    return parsed
