"""Resource subscriptions shared by the API (who is subscribed) and the workers (who holds the
backend's subscription), in Redis only.

- `{p}:subs:wanted` (hash): subscription key -> `{"backend", "uri"}`, while any client wants it.
- `{p}:subs:holder` (hash): subscription key -> the worker holding it on its backend.
- `{p}:subs:clients:{key}` (set): the clients of one backend subscription: MCP session ids, or
  `listen:{id}` for a 2026-07-28 `subscriptions/listen` stream.
- `{p}:subs:of:{client}` (hash): URI -> subscription key, for one client (to unsubscribe by URI,
  and to drop everything when the client ends).
- `{p}:subs:changed` (channel): a subscription key whose wanted state changed; workers react
  (take it, or drop it), and re-check everything on each beat (pub/sub is at-most-once).

A client is alive while its state key exists (`{p}:mcp:session:{id}`, `{p}:mcp:listen:{id}`):
an update for a subscription whose clients are all gone drops it (`fan_out`).

An update reaches each client through the MCP sessions' channel (`{p}:mcp:sessions`, see
api/mcp/sessions.py): one message per client, written by the API replica holding its stream.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from shared.config import Settings
from shared.jobs.schemas import BackendSpec

LISTEN_PREFIX = "listen:"
RESOURCE_UPDATED = "notifications/resources/updated"

# KEYS wanted, holder, clients set, client's hash; ARGV key, client, wanted json, uri.
# Returns the holder (a worker id), or '' when no worker holds it yet.
_ADD = """
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('HSET', KEYS[4], ARGV[4], ARGV[1])
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
return redis.call('HGET', KEYS[2], ARGV[1]) or ''
"""

# KEYS wanted, client's hash; ARGV client, uri, channel, clients-set prefix.
# Returns 1 if that was the subscription's last client (it is no longer wanted).
_REMOVE = """
local key = redis.call('HGET', KEYS[2], ARGV[2])
if not key then return 0 end
redis.call('HDEL', KEYS[2], ARGV[2])
local clients = ARGV[4] .. key
redis.call('SREM', clients, ARGV[1])
if redis.call('SCARD', clients) > 0 then return 0 end
redis.call('HDEL', KEYS[1], key)
redis.call('PUBLISH', ARGV[3], key)
return 1
"""

# KEYS holder, beats; ARGV key, worker, live-since ms. Claims the subscription for `worker`
# unless a live worker holds it; returns the holder afterwards.
_CLAIM = """
local holder = redis.call('HGET', KEYS[1], ARGV[1])
if holder and holder ~= ARGV[2] then
  local beat = redis.call('ZSCORE', KEYS[2], holder)
  if beat and tonumber(beat) >= tonumber(ARGV[3]) then return holder end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return ARGV[2]
"""

# KEYS wanted, holder, clients set; ARGV key, session-state prefix, listen-state prefix,
# sessions channel, method, params json, worker. Publishes the update to every live client,
# forgets the clients whose state is gone, and drops the subscription when none is left
# (returns 0 then; else the number of clients it reached).
_FAN_OUT = """
local reached = 0
for _, client in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local state
  if string.sub(client, 1, 7) == 'listen:' then
    state = ARGV[3] .. string.sub(client, 8)
  else
    state = ARGV[2] .. client
  end
  if redis.call('EXISTS', state) == 1 then
    redis.call('PUBLISH', ARGV[4], '{"session":' .. cjson.encode(client) .. ',"method":' ..
      cjson.encode(ARGV[5]) .. ',"params":' .. ARGV[6] .. '}')
    reached = reached + 1
  else
    redis.call('SREM', KEYS[3], client)
  end
end
if reached == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[7] then redis.call('HDEL', KEYS[2], ARGV[1]) end
end
return reached
"""

# KEYS holder; ARGV key, worker. Lets go of a subscription this worker holds.
_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
"""


def subscription_key(backend: BackendSpec, uri: str) -> str:
    """One backend subscription per gateway and URI, whichever servers and clients share it."""
    return hashlib.sha256(f"{backend['gateway_id']}\n{uri}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Wanted:
    key: str
    backend: BackendSpec
    uri: str


class SubscriptionStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.wanted_key = settings.key("subs", "wanted")
        self.holder_key = settings.key("subs", "holder")
        self.channel = settings.key("subs", "changed")
        # The MCP sessions' channel and state keys (api/mcp/sessions.py).
        self.sessions_channel = settings.key("mcp", "sessions")
        self.session_prefix = settings.key("mcp", "session", "")
        self.listen_prefix = settings.key("mcp", "listen", "")
        self.beats_key = settings.key("workers", "beats")
        self._add = redis.register_script(_ADD)
        self._remove = redis.register_script(_REMOVE)
        self._claim = redis.register_script(_CLAIM)
        self._fan_out = redis.register_script(_FAN_OUT)
        self._release = redis.register_script(_RELEASE)

    def _clients(self, key: str) -> str:
        return self.settings.key("subs", "clients", key)

    def _of(self, client: str) -> str:
        return self.settings.key("subs", "of", client)

    # --- the API: who wants what -----------------------------------------------------------------

    async def add(self, client: str, backend: BackendSpec, uri: str) -> tuple[str, bool]:
        """Subscribe `client`; returns the subscription key and whether a worker holds it already."""
        key = subscription_key(backend, uri)
        wanted = json.dumps({"backend": backend, "uri": uri}, separators=(",", ":"))
        holder = await self._add(
            keys=[self.wanted_key, self.holder_key, self._clients(key), self._of(client)],
            args=[key, client, wanted, uri],
        )
        return key, bool(holder)

    async def remove(self, client: str, uri: str) -> bool:
        """Unsubscribe `client` from `uri`; True if it was the subscription's last client (its
        holder is told to let go)."""
        last = await self._remove(
            keys=[self.wanted_key, self._of(client)],
            args=[client, uri, self.channel, self._clients("")],
        )
        return bool(last)

    async def remove_all(self, client: str) -> None:
        """A client that ended: drop each of its subscriptions."""
        uris: list[bytes] = await self.redis.hkeys(self._of(client))  # type: ignore[misc]
        for uri in uris:
            await self.remove(client, uri.decode())

    async def listen_alive(self, listen_id: str, ttl_ms: int) -> None:
        """A `subscriptions/listen` stream is open (its subscriptions live while this key does)."""
        await self.redis.set(self.listen_prefix + listen_id, b"1", px=ttl_ms)

    async def listen_ended(self, listen_id: str) -> None:
        await self.redis.delete(self.listen_prefix + listen_id)
        await self.remove_all(LISTEN_PREFIX + listen_id)

    # --- the workers: who holds what -------------------------------------------------------------

    async def wanted(self) -> list[Wanted]:
        raw: dict[bytes, bytes] = await self.redis.hgetall(self.wanted_key)  # type: ignore[misc]
        found = []
        for key, value in raw.items():
            data: dict[str, Any] = json.loads(value)
            found.append(Wanted(key.decode(), data["backend"], data["uri"]))
        return found

    async def holders(self) -> dict[str, str]:
        raw: dict[bytes, bytes] = await self.redis.hgetall(self.holder_key)  # type: ignore[misc]
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def claim(self, key: str, worker: str, live_since_ms: int) -> bool:
        """Hold `key` unless another live worker does."""
        holder = await self._claim(keys=[self.holder_key, self.beats_key], args=[key, worker, live_since_ms])
        return bool(holder == worker.encode())

    async def release(self, key: str, worker: str) -> None:
        await self._release(keys=[self.holder_key], args=[key, worker])

    async def fan_out(self, key: str, worker: str, uri: str) -> int:
        """Hand `notifications/resources/updated` for `uri` to every live client of `key`; 0 if
        none is left (the subscription is then dropped)."""
        params = json.dumps({"uri": uri}, separators=(",", ":"))
        reached: int = await self._fan_out(
            keys=[self.wanted_key, self.holder_key, self._clients(key)],
            args=[
                key,
                self.session_prefix,
                self.listen_prefix,
                self.sessions_channel,
                RESOURCE_UPDATED,
                params,
                worker,
            ],
        )
        return reached
