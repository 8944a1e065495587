"""Redis clients, arq's JSON serializer, and a resilient pub/sub subscriber."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.config import Settings

log = logging.getLogger(__name__)


def _exception_to_json(value: object) -> dict[str, str]:
    # arq stores an exception as a job's result when it fails outside our envelope (expired,
    # aborted before start, max tries). JSON cannot encode it, so keep its type and message.
    if isinstance(value, BaseException):
        return {"exception": type(value).__name__, "message": str(value)}
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def job_serializer(value: Any) -> bytes:
    return json.dumps(value, default=_exception_to_json, separators=(",", ":")).encode()


def job_deserializer(raw: bytes) -> Any:
    return json.loads(raw)


def make_redis(settings: Settings) -> ArqRedis:
    """An arq-capable Redis client on a blocking pool: callers wait for a connection instead of failing."""
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=10,
        health_check_interval=30,
    )
    return ArqRedis(
        connection_pool=pool,
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
        default_queue_name=settings.queue_name,
    )


async def subscribe_forever(
    redis: Redis,
    channel: str,
    on_message: Callable[[str], None],
    on_connected: Callable[[], None],
    ready: asyncio.Event | None = None,
) -> None:
    """Deliver each message on `channel` to `on_message` until cancelled.

    Pub/sub is at-most-once: after a reconnect `on_connected` runs so the owner can re-check
    anything it might have missed while the connection was down.
    """
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
            on_connected()
            if ready is not None:
                ready.set()
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is not None and message["type"] == "message":
                    data = message["data"]
                    on_message(data.decode() if isinstance(data, bytes) else str(data))
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.warning("pub/sub on %s lost (%s); reconnecting", channel, exc)
            await asyncio.sleep(0.5)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]


async def run_guarded(name: str, factory: Callable[[], Awaitable[None]]) -> None:
    """Run a background loop; log and restart it if it crashes, so one bug cannot silence it."""
    while True:
        try:
            await factory()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task %s crashed; restarting", name)
            await asyncio.sleep(1)
