"""REDIS_URL for both kinds of Redis: a plain server, or a master found through Redis Sentinel.

    redis://[[user]:password@]host[:port][/db]                     a server (rediss:// for TLS)
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]
                                                                   Sentinel (rediss+sentinel://)

With Sentinel, the hosts are the sentinels (port 26379 by default), `service` is the monitored
master's name (`sentinel monitor <service> ...`), and the user and password are the master's
(the sentinels themselves are asked without one). Every connection is opened to the master the
sentinels name at that moment, so after a failover new connections reach the new master.
`redis_pool` builds the connection pool of every Redis client of the API and the workers
(shared/redis.py make_redis) from the one URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_sentinel_url(url: str) -> SentinelURL | None:
    """The parts of a `redis+sentinel://` URL; None for any other URL. ValueError if malformed."""
    parts = urlsplit(url)
    if parts.scheme not in SENTINEL_SCHEMES:
        return None
    if parts.query or parts.fragment:
        raise ValueError("a Redis Sentinel URL takes no query or fragment")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels = tuple(_host_port(item) for item in hostlist.split(","))
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError(
            "a Redis Sentinel URL needs the master's name: redis+sentinel://host:26379/mymaster/0"
        )
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError(f"Redis db must be a number, not {path[1]!r}")
    return SentinelURL(
        sentinels=sentinels,
        service=path[0],
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        tls=SENTINEL_SCHEMES[parts.scheme],
    )


def _host_port(item: str) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]` or `[v6]:port`."""
    item = item.strip()
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = item.partition(":")
    port = port or str(DEFAULT_SENTINEL_PORT)
    if not host or not port.isdigit():
        raise ValueError(f"bad sentinel address {item!r} (host:port)")
    return host, int(port)


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """Connections to the master the sentinels name, from a pool that makes callers wait for a free
    connection (as the plain pool does) instead of raising when all are in use."""


def redis_pool(url: str, **pool_kwargs: Any) -> BlockingConnectionPool:
    """A blocking connection pool for REDIS_URL, whichever kind it is."""
    sentinel = parse_sentinel_url(url)
    if sentinel is None:
        return BlockingConnectionPool.from_url(url, **pool_kwargs)
    # Ask the sentinels with the same socket timeouts as the master, and no password.
    socket_kwargs = {k: v for k, v in pool_kwargs.items() if k.startswith("socket_")}
    # redis-py's sentinel classes have no type hints.
    manager = Sentinel(list(sentinel.sentinels), sentinel_kwargs=socket_kwargs)  # type: ignore[no-untyped-call]
    return BlockingSentinelConnectionPool(  # type: ignore[no-untyped-call]
        sentinel.service,
        manager,
        db=sentinel.db,
        username=sentinel.username,
        password=sentinel.password,
        ssl=sentinel.tls,
        **pool_kwargs,
    )
