"""Redis clients, arq's JSON serializer, and a resilient pub/sub subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from arq.connections import ArqRedis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.config import Settings
from shared.redis_urls import parse_sentinel_url, redis_pool

log = logging.getLogger(__name__)


def _exception_to_json(value: object) -> dict[str, str]:
    # arq stores an exception as a job's result when it fails outside our envelope (expired,
    # aborted before start, max tries). JSON cannot encode it, so keep its type and message.
    if isinstance(value, BaseException):
        return {"exception": type(value).__name__, "message": str(value)}
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# Payloads orjson cannot write exactly start with this byte (JSON allows leading whitespace, so
# any JSON reader still reads them); see job_serializer.
STDLIB_MARK = b" "


def job_serializer(value: Any) -> bytes:
    # orjson: ~15 us per call for a job and its result against ~70 us with the standard library.
    try:
        return orjson.dumps(value, default=_exception_to_json, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        # orjson refuses integers past 64 bits (arguments or a structured result may hold one),
        # and would read them back as floats: these payloads are written and read by the
        # standard library, marked so the reader knows without scanning.
        return STDLIB_MARK + json.dumps(value, default=_exception_to_json, separators=(",", ":")).encode()


def job_deserializer(raw: bytes) -> Any:
    if raw.startswith(STDLIB_MARK):
        return json.loads(raw)
    return orjson.loads(raw)


class RedisUnreachable(RedisConnectionError):
    """Connecting to Redis was refused moments ago: fail now rather than try again per request."""


class _ConnectTimedOut(RedisTimeoutError):
    """A new connection's connect timed out (retried while the request may wait)."""


class WaitingConnectionPool(BlockingConnectionPool):
    """redis-py's blocking pool (callers wait up to `timeout` for a free connection), telling a
    busy pool from a Redis that is down.

    - Busy: waiting is normal under a burst. On a saturated event loop even a loopback connect
      can "time out" only because the loop was busy running other requests; such a connect is
      tried again for as long as the caller may wait for a connection, instead of failing it.
    - Down: a refused connect means nothing listens. It fails this request at once, and every
      request for the next `down_memory_s`, so a Redis outage answers 503 in well under a second.
      (A host that drops packets instead of refusing is found out after `timeout`.)
    """

    def __init__(self, *, down_memory_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._down_memory_s = down_memory_s
        self._down_until = 0.0
        self._down_reason = ""

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        deadline = time.monotonic() + (self.timeout or 0)
        while True:
            self._fail_if_down()
            try:
                return await super().get_connection()
            except _ConnectTimedOut:
                if self.timeout is not None and time.monotonic() >= deadline:
                    raise

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        self._fail_if_down()  # it may have gone down while this caller waited
        fresh = not connection.is_connected
        try:
            await super().ensure_connection(connection)
        except RedisTimeoutError as exc:
            if fresh:
                raise _ConnectTimedOut(str(exc)) from exc
            raise
        except RedisConnectionError as exc:
            if fresh:
                self._down_until = time.monotonic() + self._down_memory_s
                self._down_reason = str(exc)
            raise

    def _fail_if_down(self) -> None:
        if time.monotonic() < self._down_until:
            raise RedisUnreachable(f"Redis is unreachable: {self._down_reason}")


def make_redis(settings: Settings) -> ArqRedis:
    """An arq-capable Redis client whose callers wait for a connection when all are busy."""
    common: dict[str, Any] = {
        "max_connections": settings.redis_max_connections,
        "timeout": settings.redis_pool_timeout_s,
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "health_check_interval": 30,
    }
    pool: BlockingConnectionPool
    if parse_sentinel_url(settings.redis_url) is None:
        # A plain server: a pool that tells a busy pool from a Redis that is down.
        pool = WaitingConnectionPool.from_url(
            settings.redis_url, down_memory_s=settings.redis_connect_timeout_s, **common
        )
    else:
        # redis+sentinel://: connections to the master the sentinels name.
        pool = redis_pool(settings.redis_url, **common)
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
