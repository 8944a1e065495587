"""Authenticate bearer tokens; create, list and revoke team tokens.

Team tokens are `mcpq_` + 43 random URL-safe characters (256 bits). Only their SHA-256 is
stored: a fast hash is enough for secrets that cannot be guessed. A token found valid is cached
in the process for MCPQ_TOKEN_CACHE_TTL_S (never past its expiry); revoking it also tells every
process to drop it at once, so the TTL only bounds revocation if that message is lost.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from shared.auth import repository
from shared.auth.schemas import PLATFORM_ADMIN, Principal, Role, TokenCreate, TokenCreated, TokenOut
from shared.context import AppContext
from shared.errors import NotFound, Unauthorized
from shared.ids import require_uuid
from shared.models import ApiToken, utcnow
from shared.teams import service as team_service

TOKEN_PREFIX = "mcpq_"
SHOWN_PREFIX_CHARS = 12


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def authenticate(ctx: AppContext, secret: str) -> Principal:
    """The caller behind a bearer secret. A token lookup uses a session of its own, closed at once."""
    admin = ctx.settings.admin_token
    if admin and hmac.compare_digest(secret.encode(), admin.encode()):
        return PLATFORM_ADMIN
    if not secret.startswith(TOKEN_PREFIX):
        raise Unauthorized("invalid token")
    key = digest(secret)

    async def load() -> tuple[Principal, float | None]:
        now = utcnow()
        async with ctx.read_session_factory() as s:
            grant = await repository.grant_by_hash(s, key, now)
        if grant is None:
            raise Unauthorized("invalid, expired or revoked token")
        token_id, team_id, role, expires_at = grant
        principal = Principal(role=Role(role), team_id=team_id, token_id=token_id)
        return principal, None if expires_at is None else (expires_at - now).total_seconds()

    return await ctx.token_cache.get_or_load(key, load)


def to_out(token: ApiToken) -> TokenOut:
    return TokenOut(
        id=token.id,
        name=token.name,
        team_id=token.team_id,
        role=Role(token.role),
        prefix=token.prefix,
        created_at=token.created_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
    )


async def create(ctx: AppContext, principal: Principal, body: TokenCreate) -> TokenCreated:
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    created = datetime.now(UTC)
    async with ctx.session_factory() as s:
        team = await team_service.authorized_team(s, principal, body.team, Role.ADMIN)
        token = ApiToken(
            id=uuid.uuid4(),
            team_id=team.id,
            name=body.name,
            role=body.role.value,
            token_hash=digest(secret),
            prefix=secret[:SHOWN_PREFIX_CHARS],
            created_at=created,
            expires_at=created + timedelta(seconds=body.expires_in) if body.expires_in else None,
        )
        s.add(token)
        await s.commit()
    return TokenCreated(**to_out(token).model_dump(), token=secret)


async def list_all(ctx: AppContext, principal: Principal) -> list[TokenOut]:
    principal.authorize(principal.team_id, Role.ADMIN, "tokens")
    async with ctx.read_session_factory() as s:
        tokens = await repository.list_tokens(s, principal.team_id)
    return [to_out(t) for t in tokens]


async def revoke(ctx: AppContext, principal: Principal, raw_id: str) -> None:
    token_id = require_uuid(raw_id, "token")
    async with ctx.session_factory() as s:
        token = await repository.get(s, token_id)
        if token is None:
            raise NotFound(f"token {raw_id} not found")
        principal.authorize(token.team_id, Role.ADMIN, f"token {raw_id}")
        if token.revoked_at is None:
            token.revoked_at = utcnow()
            await s.commit()
        key = token.token_hash
    await ctx.tokens_revoked(key)
