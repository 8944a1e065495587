"""Finding a catalog item (tool, resource, prompt) by the ref a caller gives."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth.schemas import Principal
from shared.db import SessionFactory
from shared.errors import NotFound
from shared.models import Gateway

Item = TypeVar("Item")
ById = Callable[[AsyncSession, uuid.UUID | None, uuid.UUID], Awaitable[tuple[Item, Gateway] | None]]
ByName = Callable[[AsyncSession, uuid.UUID | None, str, str], Awaitable[tuple[Item, Gateway] | None]]


async def lookup(
    sf: SessionFactory,
    principal: Principal,
    ref: str,
    *,
    what: str,
    separator: str,
    by_id: ById[Item],
    by_name: ByName[Item],
) -> tuple[Item, Gateway]:
    """`ref` is the item's id or `{gateway}{separator}{name}` (gateway names contain neither `.`
    nor `:`). Only items the caller sees are found: another team's private item is not found."""
    async with sf() as s:
        try:
            found = await by_id(s, principal.team_id, uuid.UUID(ref))
        except ValueError:
            gateway, sep, name = ref.partition(separator)
            found = await by_name(s, principal.team_id, gateway, name) if sep else None
    if found is None:
        # A bare name is the usual first mistake: say how a ref is written.
        bare = separator not in ref and not _is_id(ref)
        hint = f"; refer to it by its id or as {{gateway}}{separator}{ref} (GET /v1/{what}s lists them)"
        raise NotFound(f"{what} {ref!r} not found" + (hint if bare else ""))
    return found


def _is_id(ref: str) -> bool:
    try:
        uuid.UUID(ref)
    except ValueError:
        return False
    return True
