"""Catalogs that follow their backends: a backend's `list_changed` becomes a refresh of its gateway.

Workers never touch PostgreSQL, so they only say it: a worker whose pooled session hears
`notifications/tools|resources|prompts/list_changed` (or a `subscriptions/listen` event) PUBLISHes
the gateway id on `{prefix}:catalog:stale` (shared/gateways/channels.py, workers/follow.py).
Every API process hears it; one runs the refresh pipeline (shared/gateways/service.py), the
others leave it alone:

- `{prefix}:catalog:refreshing:{id}` (SET NX) names the process that refreshes the gateway. It
  holds the lock for the refresh and `catalog_refresh_coalesce_s` after it: at most one refresh
  per gateway per that many seconds, whatever the number of notices, sessions or workers.
- A notice that finds the lock taken sets `{prefix}:catalog:pending:{id}`. When the holder's
  window ends it takes that flag (in the same script that would release the lock) and refreshes
  again, so a change announced during a refresh is never lost to the coalescing.
- The lock expires on its own (refresh timeout + window) if its process dies.

Pub/sub is at-most-once: a notice sent while no API process is subscribed is lost, and the
catalog then waits for the next notice or a manual refresh.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from shared.context import AppContext
from shared.errors import MCPQError
from shared.gateways import service
from shared.gateways.channels import stale_channel

log = logging.getLogger(__name__)

# KEYS[1] lock, KEYS[2] pending flag; ARGV owner, lock ms. 1: the caller holds the lock and
# refreshes; 0: another process does, and will refresh again when its window ends.
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 0
"""

# KEYS[1] lock, KEYS[2] pending flag; ARGV owner, lock ms. 1: notices came in during the window,
# the owner keeps the lock and refreshes again; 0: the lock is released.
_AGAIN_OR_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('DEL', KEYS[2]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
redis.call('DEL', KEYS[1])
return 0
"""


class CatalogFollower:
    """The API process's side: hears notices, and refreshes the gateways it wins the lock of."""

    def __init__(self, ctx: AppContext, redis: Redis) -> None:
        self._ctx = ctx
        self._redis = redis
        self._owner = uuid.uuid4().hex
        settings = ctx.settings
        self._window_s = settings.catalog_refresh_coalesce_s
        self._lock_ms = int((settings.discovery_timeout_s + self._window_s + 5) * 1000)
        self._claim = redis.register_script(_CLAIM)
        self._again_or_release = redis.register_script(_AGAIN_OR_RELEASE)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def channels(self) -> dict[str, Callable[[str], None]]:
        return {stale_channel(self._ctx.settings): self.heard}

    def heard(self, message: str) -> None:
        try:
            gateway_id = uuid.UUID(message)
        except ValueError:
            log.warning("ignored a catalog notice that is not a gateway id: %.60r", message)
            return
        task = asyncio.create_task(self._follow(gateway_id), name=f"catalog-follow {gateway_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _keys(self, gateway_id: uuid.UUID) -> list[str]:
        settings = self._ctx.settings
        return [
            settings.key("catalog", "refreshing", str(gateway_id)),
            settings.key("catalog", "pending", str(gateway_id)),
        ]

    async def _follow(self, gateway_id: uuid.UUID) -> None:
        keys, args = self._keys(gateway_id), [self._owner, str(self._lock_ms)]
        try:
            if not await self._claim(keys=keys, args=args):
                return  # another process refreshes it, now or when its window ends
            while True:
                await self._refresh(gateway_id)
                # The coalescing window: notices meanwhile set the pending flag.
                await asyncio.sleep(self._window_s)
                if not await self._again_or_release(keys=keys, args=args):
                    return
        except RedisError as exc:
            log.warning("catalog of gateway %s not followed: %s", gateway_id, exc)

    async def _refresh(self, gateway_id: uuid.UUID) -> None:
        try:
            await service.refresh_by_id(self._ctx, gateway_id)
        except (MCPQError, SQLAlchemyError, RedisError, OSError) as exc:
            # Nobody waits for this refresh: say why it failed; the next notice tries again.
            log.warning("refresh of gateway %s after its backend's list_changed failed: %s", gateway_id, exc)
        else:
            log.info("refreshed gateway %s: its backend said its lists changed", gateway_id)
