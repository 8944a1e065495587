"""The circuit breaker per gateway, kept in Redis: workers write call outcomes, the API reads them.

One hash per gateway, `{prefix}:breaker:{gateway_id}`:
- `failures`: consecutive transport failures (connect refused, connection closed before the
  answer) of calls to the gateway, from every worker; a success deletes the hash.
- `open_until`: Unix time (Redis' clock) until which the circuit is open. It opens when
  `failures` reaches `MCPQ_BREAKER_FAILURES`, for `MCPQ_BREAKER_OPEN_S`; each further failure
  (a half-open probe that failed, a call that was already in flight) opens it again from then.
- `probe`: when the one half-open probe was let through (see `claim_probe`).
The hash expires `idle_ttl_s` after its last write, so failures long ago do not add up with new ones.

The same writes keep the gateway's health as real calls see it, `{prefix}:health:{gateway_id}`:
`ok_at` (the last success, to within a second: a worker writes successes at most once a second
per gateway), `error` and `error_at` (the last failure to reach the backend: connect, transport,
token endpoint). It outlives the breaker's hash (`HEALTH_TTL_S` after the last call) and goes
with the gateway.

Times come from Redis (`TIME`), so API and worker hosts need not agree on the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from redis.asyncio import Redis

from shared.config import Settings

# A gateway's health is forgotten this long after its last call.
HEALTH_TTL_S = 30 * 86400
HEALTH_FIELDS = ("ok_at", "error", "error_at")

# KEYS[1] breaker hash, KEYS[2] health hash; ARGV reset (0/1), failures to add, threshold, open
# seconds, idle TTL, the last failure's message, health TTL.
# Returns {failures, open_until, now} (numbers as strings: Lua would truncate floats).
_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local stamp = string.format('%.3f', now)
local added = tonumber(ARGV[2])
if ARGV[1] == '1' then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'ok_at', stamp)
end
if added > 0 then redis.call('HSET', KEYS[2], 'error', ARGV[6], 'error_at', stamp) end
redis.call('EXPIRE', KEYS[2], ARGV[7])
if added == 0 then return {'0', '0', tostring(now)} end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', added)
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if failures >= tonumber(ARGV[3]) then
  open_until = now + tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'open_until', string.format('%.3f', open_until))
  redis.call('HDEL', KEYS[1], 'probe')
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {tostring(failures), string.format('%.3f', open_until), string.format('%.3f', now)}
"""

# KEYS[1] breaker hash; ARGV threshold, open seconds. 1 if the caller may send the half-open
# probe: the circuit has tripped, its open time is over, and no probe is out (or the one that
# is has been out longer than the open time, so its outcome is not coming).
_CLAIM_PROBE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local v = redis.call('HMGET', KEYS[1], 'failures', 'open_until', 'probe')
if tonumber(v[1] or '0') < tonumber(ARGV[1]) or now < tonumber(v[2] or '0') then return 0 end
if v[3] and now - tonumber(v[3]) < tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'probe', string.format('%.3f', now))
return 1
"""


def admit_lua(key: str, threshold: str, open_s: str) -> str:
    """A Lua snippet for a script that admits calls (the enqueue script), so the breaker costs no
    round trip of its own. With the breaker hash in `key` and the threshold and open seconds in
    the `threshold` and `open_s` expressions, it returns {'breaker_open', seconds to wait} when the
    circuit refuses the call, and lets one probe through once the open time is over, as
    `Breaker.claim_probe` does."""
    return f"""
do
  local b = redis.call('HMGET', {key}, 'failures', 'open_until', 'probe')
  if tonumber(b[1] or '0') >= tonumber({threshold}) then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
    local open_until = tonumber(b[2] or '0')
    if now < open_until then return {{'breaker_open', string.format('%.3f', open_until - now)}} end
    local probe = tonumber(b[3] or '0')
    if now - probe < tonumber({open_s}) then
      return {{'breaker_open', string.format('%.3f', tonumber({open_s}) - (now - probe))}}
    end
    redis.call('HSET', {key}, 'probe', string.format('%.3f', now))
  end
end
"""


class BreakerStatus(StrEnum):
    CLOSED = "closed"  # calls go through
    OPEN = "open"  # calls are refused until `open_until`
    HALF_OPEN = "half_open"  # the open time is over: one probe call decides


@dataclass(frozen=True)
class BreakerState:
    failures: int
    open_until: float  # Unix time; 0 when the circuit never opened since the last success
    now: float  # Redis' clock when this was read
    threshold: int

    @property
    def status(self) -> BreakerStatus:
        if self.now < self.open_until:
            return BreakerStatus.OPEN
        if self.failures >= self.threshold:
            return BreakerStatus.HALF_OPEN
        return BreakerStatus.CLOSED

    @property
    def retry_after_s(self) -> float:
        """Seconds until the circuit half-opens (0 unless open): the `Retry-After` to send."""
        return max(0.0, self.open_until - self.now)


@dataclass(frozen=True)
class Health:
    """A gateway's last success and last failure as real calls saw them (None: not seen)."""

    last_seen_ok_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None


def breaker_key(settings: Settings, gateway_id: str) -> str:
    return settings.key("breaker", gateway_id)


def health_key(settings: Settings, gateway_id: str) -> str:
    return settings.key("health", gateway_id)


def _when(value: bytes | str | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), UTC)


def parse_health(values: list[bytes | str | None]) -> Health:
    """A health from HMGET ok_at error error_at."""
    ok_at, error, error_at = values
    message = error.decode() if isinstance(error, bytes) else error
    return Health(last_seen_ok_at=_when(ok_at), last_error=message, last_error_at=_when(error_at))


def parse_state(values: list[bytes | str | None], now: float, threshold: int) -> BreakerState:
    """A state from HMGET failures open_until, and Redis' time."""
    failures, open_until = (float(v) if v is not None else 0.0 for v in values[:2])
    return BreakerState(failures=int(failures), open_until=open_until, now=now, threshold=threshold)


class Breaker:
    """Reads and writes the breaker hashes of one deployment (its key prefix and thresholds)."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self.threshold = settings.breaker_failures
        self.open_s = settings.breaker_open_s
        # Counts outlive a window of open time, then lapse (see the module doc).
        self.idle_ttl_s = max(300, int(self.open_s * 10))
        self._record = redis.register_script(_RECORD)
        self._claim_probe = redis.register_script(_CLAIM_PROBE)

    async def state(self, gateway_id: str) -> BreakerState:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(breaker_key(self._settings, gateway_id), ["failures", "open_until"])
            pipe.time()
            values, (seconds, micros) = await pipe.execute()
        return parse_state(values, seconds + micros / 1e6, self.threshold)

    async def states(self, gateway_ids: list[str]) -> list[BreakerState]:
        """Many gateways' states in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for gateway_id in gateway_ids:
                pipe.hmget(breaker_key(self._settings, gateway_id), ["failures", "open_until"])
            pipe.time()
            *values, (seconds, micros) = await pipe.execute()
        now = seconds + micros / 1e6
        return [parse_state(v, now, self.threshold) for v in values]

    async def states_and_health(self, gateway_ids: list[str]) -> list[tuple[BreakerState, Health]]:
        """Many gateways' breakers and health in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for gateway_id in gateway_ids:
                pipe.hmget(breaker_key(self._settings, gateway_id), ["failures", "open_until"])
                pipe.hmget(health_key(self._settings, gateway_id), list(HEALTH_FIELDS))
            pipe.time()
            *values, (seconds, micros) = await pipe.execute()
        now = seconds + micros / 1e6
        return [
            (parse_state(values[i], now, self.threshold), parse_health(values[i + 1]))
            for i in range(0, len(values), 2)
        ]

    async def forget(self, gateway_id: str) -> None:
        """Drop a deleted gateway's breaker and health."""
        await self._redis.delete(
            breaker_key(self._settings, gateway_id), health_key(self._settings, gateway_id)
        )

    async def tripped(self) -> dict[str, BreakerState]:
        """Every gateway whose breaker has counted failures since its last success (for /metrics):
        a key scan, bounded by the number of failing gateways, not of all gateways."""
        prefix = breaker_key(self._settings, "")
        ids = [
            (key.decode() if isinstance(key, bytes) else str(key))[len(prefix) :]
            async for key in self._redis.scan_iter(match=f"{prefix}*", count=500)
        ]
        return dict(zip(ids, await self.states(ids), strict=True)) if ids else {}

    async def record(self, gateway_id: str, *, ok: bool, failures: int = 1, error: str = "") -> BreakerState:
        """One outcome: a success closes the circuit; a failure counts `failures` more."""
        return await self.record_outcomes(gateway_id, reset=ok, failures=0 if ok else failures, error=error)

    async def record_outcomes(
        self, gateway_id: str, *, reset: bool, failures: int, error: str = ""
    ) -> BreakerState:
        """Outcomes coalesced: a success (`reset`), then `failures` failures after it, the last of
        which said `error`."""
        args: list[str | int | float] = [
            int(reset),
            failures,
            self.threshold,
            self.open_s,
            self.idle_ttl_s,
            error,
            HEALTH_TTL_S,
        ]
        keys = [breaker_key(self._settings, gateway_id), health_key(self._settings, gateway_id)]
        raw = await self._record(keys=keys, args=args)
        count, open_until, now = (float(v) for v in raw)
        return BreakerState(failures=int(count), open_until=open_until, now=now, threshold=self.threshold)

    async def claim_probe(self, gateway_id: str) -> bool:
        """True for exactly one caller once the open time is over: that call is the probe."""
        key = breaker_key(self._settings, gateway_id)
        return bool(await self._claim_probe(keys=[key], args=[self.threshold, self.open_s]))
