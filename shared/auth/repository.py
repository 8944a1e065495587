"""Every query about API tokens lives here."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.models import ApiToken

# What authentication needs of a token: id, team, role, expiry.
TokenGrant = tuple[uuid.UUID, uuid.UUID, str, datetime | None]


async def grant_by_hash(s: AsyncSession, digest: str, now: datetime) -> TokenGrant | None:
    """The token with this hash if it is neither revoked nor expired; plain values, no ORM row."""
    stmt = select(ApiToken.id, ApiToken.team_id, ApiToken.role, ApiToken.expires_at).where(
        ApiToken.token_hash == digest,
        ApiToken.revoked_at.is_(None),
        or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
    )
    row = (await s.execute(stmt)).tuples().first()
    return None if row is None else (row[0], row[1], row[2], row[3])


async def get(s: AsyncSession, token_id: uuid.UUID) -> ApiToken | None:
    return await s.get(ApiToken, token_id)


async def list_tokens(s: AsyncSession, team_id: uuid.UUID | None) -> list[ApiToken]:
    stmt = select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)
    if team_id is not None:
        stmt = stmt.where(ApiToken.team_id == team_id)
    return list(await s.scalars(stmt))
