"""Opaque keyset cursors: a position (a short list of plain values) as URL-safe base64 JSON."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any

from shared.errors import BadRequest

# (gateway name, gateway id, item key): gateway names are unique per team only, so the id breaks
# ties between same-named gateways of different teams.
Position = tuple[str, uuid.UUID, str]


def encode(position: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def decode(cursor: str) -> Position:
    gateway, gateway_id, key = decode_values(cursor, 3)
    try:
        return str(gateway), uuid.UUID(str(gateway_id)), str(key)
    except ValueError:
        raise BadRequest("invalid cursor") from None


def decode_values(cursor: str, count: int) -> list[Any]:
    """The `count` plain values a cursor holds; 400 for anything else."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, binascii.Error):
        raise BadRequest("invalid cursor") from None
    if not isinstance(values, list) or len(values) != count:
        raise BadRequest("invalid cursor")
    return values


def next_cursor(last: list[Any] | None, more: bool) -> str | None:
    """The cursor after the page's last item, if another page follows."""
    return encode(last) if last is not None and more else None
