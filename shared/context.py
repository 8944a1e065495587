"""What services need from the running process, built once in the API lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from shared.auth.schemas import Principal
from shared.cache import TTLCache
from shared.config import Settings
from shared.db import SessionFactory
from shared.jobs.service import JobQueue
from shared.security import SecretBox
from shared.tools.schemas import ResolvedTool

# Token caches are told which token to forget by its hash; this message means "forget them all".
ALL_TOKENS = "*"


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    session_factory: SessionFactory
    read_session_factory: SessionFactory
    queue: JobQueue
    secrets: SecretBox
    # Keyed by (the caller's scope, the tool ref): what a ref resolves to depends on who asks.
    tool_cache: TTLCache[tuple[str, str], ResolvedTool]
    # Keyed by the token's SHA-256; each entry lives at most MCPQ_TOKEN_CACHE_TTL_S.
    token_cache: TTLCache[str, Principal]

    @property
    def catalog_channel(self) -> str:
        return self.settings.key("catalog", "changed")

    @property
    def tokens_channel(self) -> str:
        return self.settings.key("tokens", "revoked")

    async def catalog_changed(self) -> None:
        """Tell every API process (this one included) that cached tools may be stale."""
        self.tool_cache.clear()
        await self.queue.redis.publish(self.catalog_channel, b"1")

    def forget_token(self, message: str) -> None:
        if message == ALL_TOKENS:
            self.token_cache.clear()
        else:
            self.token_cache.discard(message)

    async def tokens_revoked(self, digest: str = ALL_TOKENS) -> None:
        """Make every API process (this one included) forget a cached token, or all of them."""
        self.forget_token(digest)
        await self.queue.redis.publish(self.tokens_channel, digest.encode())
