"""A worker's side of catalogs that follow their backends (see shared/gateways/follow.py): it says
which gateway's backend announced a list change, and the API processes refresh it.

Calls never wait on Redis: `note` starts a background PUBLISH, one at a time per gateway (a notice
heard while one is on its way adds nothing: the API refreshes after it in any case).
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.config import Settings
from shared.gateways.channels import stale_channel

log = logging.getLogger(__name__)


class CatalogNotices:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._channel = stale_channel(settings)
        self._sending: dict[str, asyncio.Task[None]] = {}

    def note(self, gateway_id: str) -> None:
        if gateway_id not in self._sending:
            self._sending[gateway_id] = asyncio.create_task(self._send(gateway_id))

    async def _send(self, gateway_id: str) -> None:
        try:
            await self._redis.publish(self._channel, gateway_id)
        except (RedisError, OSError) as exc:
            log.warning("list change of gateway %s not passed on: %s", gateway_id, exc)
        finally:
            del self._sending[gateway_id]

    async def close(self) -> None:
        """Let the notices under way go out (bounded)."""
        if self._sending:
            await asyncio.wait(list(self._sending.values()), timeout=2)
