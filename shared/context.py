"""What services need from the running process, built once in the API lifespan."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.auth.schemas import Principal
from shared.cache import TTLCache
from shared.config import Settings
from shared.db import SessionFactory
from shared.gateways.breaker import Breaker
from shared.jobs.queue import JobQueue
from shared.security import SecretBox

# Token caches are told which token to forget by its hash; this message means "forget them all".
ALL_TOKENS = "*"


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    session_factory: SessionFactory
    read_session_factory: SessionFactory
    queue: JobQueue
    secrets: SecretBox
    # The gateways' circuit breakers (written by workers, read before a call is enqueued).
    breaker: Breaker
    # Catalog items as plain values, keyed by (kind, the caller's scope or "server:<id>", the ref or
    # name): what a ref resolves to depends on who asks (see shared/items/service.py).
    item_cache: TTLCache[tuple[str, str, str], Any]
    # Keyed by the token's SHA-256; each entry lives at most MCPQ_TOKEN_CACHE_TTL_S.
    token_cache: TTLCache[str, Principal]

    @property
    def catalog_channel(self) -> str:
        return self.settings.key("catalog", "changed")

    @property
    def tokens_channel(self) -> str:
        return self.settings.key("tokens", "revoked")

    async def catalog_changed(self, lists: Mapping[uuid.UUID, set[str]] | None = None) -> None:
        """Tell every API process (this one included) that cached items may be stale, and which
        lists (`tools`, `resources`, `prompts`) of which virtual servers changed: each process
        tells the MCP clients of those servers it holds (`notifications/*/list_changed`)."""
        self.item_cache.clear()
        changed = {str(server): sorted(kinds) for server, kinds in (lists or {}).items() if kinds}
        await self.queue.broadcast(self.catalog_channel, json.dumps({"lists": changed}).encode())

    def forget_token(self, message: str) -> None:
        if message == ALL_TOKENS:
            self.token_cache.clear()
        else:
            self.token_cache.discard(message)

    async def tokens_revoked(self, digest: str = ALL_TOKENS) -> None:
        """Make every API process (this one included) forget a cached token, or all of them."""
        self.forget_token(digest)
        await self.queue.broadcast(self.tokens_channel, digest.encode())


def changed_lists(message: str) -> dict[str, list[str]]:
    """The lists each server changed, from a catalog message (`catalog_changed`)."""
    try:
        lists = json.loads(message).get("lists")
    except (ValueError, AttributeError):
        return {}
    return {str(k): [str(x) for x in v] for k, v in lists.items()} if isinstance(lists, dict) else {}
