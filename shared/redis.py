"""Redis clients, arq's JSON serializer, and a resilient pub/sub subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.config import Settings
from shared.redis_urls import redis_pool

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
    # A plain server or, for a redis+sentinel:// URL, the master the sentinels name.
    pool = redis_pool(
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
    handlers: dict[str, Callable[[str], None]],
    on_connected: Callable[[], None],
    ready: asyncio.Event | None = None,
) -> None:
    """Deliver each message to the handler of its channel until cancelled: one connection for all.

    Pub/sub is at-most-once: after a reconnect `on_connected` runs so the owner can re-check
    anything it might have missed while the connection was down.
    """
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*handlers)
            on_connected()
            if ready is not None:
                ready.set()
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is not None and message["type"] == "message":
                    channel, data = message["channel"], message["data"]
                    handler = handlers.get(channel.decode() if isinstance(channel, bytes) else str(channel))
                    if handler is not None:
                        handler(data.decode() if isinstance(data, bytes) else str(data))
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.warning("pub/sub on %s lost (%s); reconnecting", ", ".join(handlers), exc)
            await asyncio.sleep(0.5)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]


async def start_subscriber(
    redis: Redis, handlers: dict[str, Callable[[str], None]], on_connected: Callable[[], None]
) -> asyncio.Task[None]:
    """Run `subscribe_forever` in the background; return once it is subscribed."""
    ready = asyncio.Event()
    task = asyncio.create_task(
        run_guarded("pub/sub", lambda: subscribe_forever(redis, handlers, on_connected, ready))
    )
    await asyncio.wait_for(ready.wait(), timeout=10)
    return task


async def stop_task(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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
