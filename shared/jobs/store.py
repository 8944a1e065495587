"""The job record in Redis: one hash per job, moved between states by atomic Lua scripts.

The record holds what `GET /v1/jobs/{id}` reports. Workers write it; arq's stored result is
the fallback source of truth when a job ended without our code running (expired, aborted
before start, a worker crash): `reconcile` folds that into the record.

Jobs in flight are counted per team in a sorted set (the record's `slot` names it): enqueue
admits a job only while the set is below the team's limit, and the scripts that make a job
terminal (finish, cancel while queued) remove it. ZREM is idempotent, so no path can count a
job out twice; each entry's score is the latest moment the job can still be in flight, so a job
that never reaches a terminal state (its record expired unread) ages out instead of leaking a slot.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from arq.constants import (
    abort_jobs_ss,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import Job, serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import Redis

from shared.config import Settings
from shared.gateways.breaker import admit_lua, breaker_key
from shared.jobs.schemas import (
    ANSWER_PREFIX,
    Envelope,
    JobError,
    JobEvent,
    JobKind,
    JobRecord,
    JobStatus,
    PreparedJob,
    utc_iso,
)
from shared.redis import job_deserializer, job_serializer

# Publishes a record whole on the done channel, as _FINISH does, so waiters need no read: the job
# id, then the record as JSON (answers not yet taken by the worker left out). What moves a job
# between working and input_required calls it: a task's status pushes follow every change.
_PUBLISH_RECORD = """
local function publish_record(key, job_id, channel)
  local flat = redis.call('HGETALL', key)
  local record = {}
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, 7) ~= 'answer:' then record[flat[i]] = flat[i + 1] end
  end
  redis.call('PUBLISH', channel, job_id .. ' ' .. cjson.encode(record))
end
"""

# KEYS[1] arq queue, KEYS[2] arq abort set, KEYS[3] the claiming worker's running set;
# ARGV now ms, most jobs to claim, lock ms, worker id, started_at, record key prefix, then arq's
# in-progress, retry and job key prefixes, then the done channel. Returns, per claimed job: {id,
# serialized arq job or nil, try, aborted before start (0/1), previous record status, attempts,
# created_ts}.
#
# One script claims every due job a worker has room for, atomically, so two workers never race
# for one job. Per job it does what arq's pickup does (in-progress lock unless one is held, try
# counter, job read, abort check) and what our record needs (running, attempts, worker).
# arq leaves a running job in its queue until it ends, so the job's score moves to when its
# lock expires: later claims skip it, and if its worker dies unseen it is due again exactly when
# arq would have retried it. The running set lets a live worker hand on a dead one's jobs sooner.
_CLAIM = (
    _PUBLISH_RECORD
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local lock_until = tonumber(ARGV[1]) + tonumber(ARGV[3])
local claimed = {}
for _, id in ipairs(due) do
  local lock = ARGV[7] .. id
  if redis.call('EXISTS', lock) == 0 then
    redis.call('SET', lock, '1', 'PX', ARGV[3])
    local try = redis.call('INCR', ARGV[8] .. id)
    redis.call('EXPIRE', ARGV[8] .. id, 88400)
    local job = redis.call('GET', ARGV[9] .. id)
    local aborted = redis.call('ZREM', KEYS[2], id)
    redis.call('ZADD', KEYS[1], 'XX', lock_until, id)
    redis.call('SADD', KEYS[3], id)
    local record = ARGV[6] .. id
    local seen = redis.call('HMGET', record, 'status', 'attempts', 'created_ts')
    local st, attempts = seen[1] or 'missing', seen[2] or '0'
    -- A job whose worker stopped while it waited for input runs again like a running one; its
    -- questions went with that worker (a new run asks again), and its waiters hear it is working.
    local was_asking = st == 'input_required'
    if was_asking then
      st = 'running'
      for _, name in ipairs(redis.call('HKEYS', record)) do
        if string.sub(name, 1, 4) == 'ask:' then redis.call('HDEL', record, name) end
      end
    end
    if st == 'queued' or st == 'running' then
      attempts = redis.call('HINCRBY', record, 'attempts', 1)
      redis.call('HSET', record, 'status', 'running', 'started_at', ARGV[5], 'worker', ARGV[4])
    end
    if was_asking then publish_record(record, id, ARGV[10]) end
    claimed[#claimed + 1] = {id, job, try, aborted, st, tostring(attempts), seen[3] or '0'}
  end
end
return claimed
"""
)

# Admits and writes jobs, several per call (the API's enqueues grouped: shared/batching.py), in
# order, each as if alone. Per job, 9 KEYS: record, arq job, arq queue, the team's in-flight set,
# the team's task index (the record's key when the job is not listed as a task), the caller's
# idempotency key (the record's key when it sent none), the team's index of recent jobs (the
# record's key for a job of no team), the index of every team's recent jobs, the gateway's
# circuit breaker (the record's key for a job the breaker does not gate: discovery); and ARGV:
# job id, now ms, limit (0: none), in-flight horizon ms, record ttl, serialized arq job, queue
# ttl ms, wake list, queue cap (0: none), request fingerprint, entries kept per index of recent
# jobs, breaker threshold, breaker open seconds, the number of record field/value items, then
# those items. Returns per job {'ok'}, {'team_full'}, {'queue_full'}, {'breaker_open', seconds},
# or {'duplicate', job id, fingerprint} when the idempotency key already names a job (nothing is
# written then).
# The wake-up is a token in a list that idle workers block on: each new job wakes one worker,
# not all of them (a broadcast made every worker race for every job). Capped: with no worker
# running, tokens must not pile up.
_ENQUEUE = (
    """
local function enqueue(k, a)
  local record = KEYS[k + 1]
  if KEYS[k + 6] ~= record then
    local known = redis.call('HMGET', KEYS[k + 6], 'job', 'fingerprint')
    if known[1] then return {'duplicate', known[1], known[2]} end
  end
  if KEYS[k + 9] ~= record then
"""
    + admit_lua("KEYS[k + 9]", "ARGV[a + 12]", "ARGV[a + 13]")
    + """
  end
  local id, now = ARGV[a + 1], tonumber(ARGV[a + 2])
  local cap = tonumber(ARGV[a + 9])
  if cap > 0 and redis.call('ZCARD', KEYS[k + 3]) >= cap then return {'queue_full'} end
  local limit = tonumber(ARGV[a + 3])
  if limit > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 4], '-inf', now)
    if redis.call('ZCARD', KEYS[k + 4]) >= limit then return {'team_full'} end
    redis.call('ZADD', KEYS[k + 4], now + tonumber(ARGV[a + 4]), id)
    redis.call('PEXPIRE', KEYS[k + 4], ARGV[a + 4])
  end
  -- Indexes by creation time. Entries older than a record can live are trimmed here, so an
  -- index never outgrows the records; `keep` > 0 also bounds it to its newest entries.
  local ttl_ms = tonumber(ARGV[a + 5]) * 1000
  local function index(key, keep)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - ttl_ms)
    redis.call('ZADD', key, now, id)
    if keep > 0 then redis.call('ZREMRANGEBYRANK', key, 0, -keep - 1) end
    redis.call('PEXPIRE', key, ttl_ms)
  end
  -- Tool-call jobs are MCP tasks too: tasks/list pages through all of them.
  if KEYS[k + 5] ~= record then index(KEYS[k + 5], 0) end
  -- Every job, newest kept, for GET /v1/jobs (the console): per team, and across teams.
  if KEYS[k + 7] ~= record then index(KEYS[k + 7], tonumber(ARGV[a + 11])) end
  index(KEYS[k + 8], tonumber(ARGV[a + 11]))
  if KEYS[k + 6] ~= record then
    -- The key names the job as long as its record lives.
    redis.call('HSET', KEYS[k + 6], 'job', id, 'fingerprint', ARGV[a + 10])
    redis.call('EXPIRE', KEYS[k + 6], ARGV[a + 5])
  end
  redis.call('HSET', record, unpack(ARGV, a + 15, a + 14 + tonumber(ARGV[a + 14])))
  redis.call('EXPIRE', record, ARGV[a + 5])
  redis.call('PSETEX', KEYS[k + 2], ARGV[a + 7], ARGV[a + 6])
  redis.call('ZADD', KEYS[k + 3], now, id)
  redis.call('LPUSH', ARGV[a + 8], '1')
  redis.call('LTRIM', ARGV[a + 8], 0, 999)
  return {'ok'}
end
local admitted, a = {}, 0
for j = 0, #KEYS / 9 - 1 do
  admitted[j + 1] = enqueue(j * 9, a)
  a = a + 14 + tonumber(ARGV[a + 14])
end
return admitted
"""
)

# Frees the job's in-flight slot; shared by the scripts that make a job terminal.
_RELEASE_SLOT = """
local function release_slot(record, job_id)
  local slot = redis.call('HGET', record, 'slot')
  if slot and slot ~= '' then redis.call('ZREM', slot, job_id) end
end
"""

# Ends jobs, several per call (a worker's finishes grouped: shared/batching.py). ARGV[1] record
# ttl, ARGV[2] done channel, ARGV[3] largest result to publish whole, ARGV[4] arq's result ttl
# ms; then per job ARGV job id, status, finished_at, result json, error json, arq's serialized
# result ('' for none), latest progress json ('' for none) and KEYS record, arq result,
# in-progress lock, try counter, arq job, arq queue, abort set, the worker's running set.
# Returns per job 1, or 0 if its record had already ended. The message on the done channel is
# the job id, then for a small result the whole record as JSON, so waiters need no read.
# A worker's finish also ends the job on arq's side in the same round trip (what arq's own
# finish_job writes); that part runs even if the record already ended. Without it (a finish
# outside a worker: reconcile) every key but the record's is unused.
_FINISH = (
    _RELEASE_SLOT
    + """
local function finish(k, a)
  local record, id = KEYS[k + 1], ARGV[a + 1]
  if ARGV[a + 6] ~= '' then
    redis.call('SET', KEYS[k + 2], ARGV[a + 6], 'PX', ARGV[4])
    redis.call('DEL', KEYS[k + 3], KEYS[k + 4], KEYS[k + 5])
    redis.call('ZREM', KEYS[k + 6], id)
    redis.call('ZREM', KEYS[k + 7], id)
    redis.call('SREM', KEYS[k + 8], id)
  end
  local st = redis.call('HGET', record, 'status')
  if (not st) or st == 'completed' or st == 'failed' or st == 'cancelled' then return 0 end
  release_slot(record, id)
  if ARGV[a + 7] ~= '' then redis.call('HSET', record, 'progress', ARGV[a + 7]) end
  redis.call('HSET', record, 'status', ARGV[a + 2], 'finished_at', ARGV[a + 3])
  if ARGV[a + 4] ~= '' then redis.call('HSET', record, 'result', ARGV[a + 4]) end
  if ARGV[a + 5] ~= '' then redis.call('HSET', record, 'error', ARGV[a + 5]) end
  redis.call('EXPIRE', record, ARGV[1])
  if string.len(ARGV[a + 4]) <= tonumber(ARGV[3]) then
    local flat = redis.call('HGETALL', record)
    local fields = {}
    for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
    redis.call('PUBLISH', ARGV[2], id .. ' ' .. cjson.encode(fields))
  else
    redis.call('PUBLISH', ARGV[2], id)
  end
  return 1
end
local ended = {}
for j = 0, #KEYS / 8 - 1 do ended[j + 1] = finish(j * 8, 4 + j * 7) end
return ended
"""
)

# What GET /v1/jobs can page through: the newest jobs of each team (and of all teams), not the
# whole history. Bounds the indexes under load, and the records one listing may read.
RECENT_JOBS_KEPT = 1000

# KEYS[1] in-progress lock, KEYS[2] arq queue, KEYS[3] the worker's running set, KEYS[4] wake
# list; ARGV job id, now ms. A worker that stops hands a job it could not finish back: due at
# once, unlocked, and one idle worker woken for it. The next attempt decides what happens
# (re-run if retry-safe, else worker_lost).
_HAND_BACK = """
redis.call('DEL', KEYS[1])
if redis.call('ZADD', KEYS[2], 'XX', 'CH', ARGV[2], ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[4], '1')
  redis.call('LTRIM', KEYS[4], 0, 999)
end
redis.call('SREM', KEYS[3], ARGV[1])
"""

# KEYS[1] the workers' beats (worker id -> last beat ms), KEYS[2] arq queue, KEYS[3] wake list;
# ARGV now ms, worker id, beats older than this are dead, reap (0/1), running-set key prefix,
# arq's in-progress prefix. Beats, then hands on every job of workers whose beat has lapsed:
# unlocked and due now. Returns how many jobs were handed on.
_BEAT = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
if ARGV[4] == '0' then return 0 end
local handed = 0
for _, worker in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])) do
  local running = ARGV[5] .. worker .. ':jobs'
  for _, id in ipairs(redis.call('SMEMBERS', running)) do
    redis.call('DEL', ARGV[6] .. id)
    if redis.call('ZADD', KEYS[2], 'XX', 'CH', ARGV[1], id) == 1 then
      handed = handed + 1
      redis.call('LPUSH', KEYS[3], '1')
    end
  end
  redis.call('DEL', running)
  redis.call('ZREM', KEYS[1], worker)
end
redis.call('LTRIM', KEYS[3], 0, 999)
return handed
"""

# Results up to this size travel inside the completion message; larger ones are read by id.
PUBLISH_WHOLE_MAX_BYTES = 32_768

# KEYS[1] record; ARGV job id, now, ttl, channel, error json. Returns the status after the call.
_CANCEL = (
    _RELEASE_SLOT
    + """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'missing' end
if st == 'queued' then
  release_slot(KEYS[1], ARGV[1])
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[2], 'error', ARGV[5],
             'cancel_requested', '1')
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('PUBLISH', ARGV[4], ARGV[1])
  return 'cancelled'
end
if st == 'running' or st == 'input_required' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
end
return st
"""
)

# Whether the record still has a question without an answer.
_STILL_ASKING = """
local function still_asking()
  for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(name, 1, 4) == 'ask:' then return true end
  end
  return false
end
"""

# KEYS[1] record, KEYS[2] arq in-progress lock, KEYS[3] arq queue; ARGV job id, question key,
# question json, how much longer the job may now take (ms), done channel. A running job asks its
# caller something: the question goes in the record, the job is input_required, and every waiter
# hears it. Waiting on a person is off the job's clock: its lease (the lock, and the queue score
# another worker would pick it up at) moves on by the longest the answer may take.
_ASK = (
    _PUBLISH_RECORD
    + """
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'running' and st ~= 'input_required' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'input_required', 'ask:' .. ARGV[2], ARGV[3])
local extra = tonumber(ARGV[4])
local lock = redis.call('PTTL', KEYS[2])
if lock > 0 then redis.call('PEXPIRE', KEYS[2], lock + extra) end
local score = redis.call('ZSCORE', KEYS[3], ARGV[1])
if score then redis.call('ZADD', KEYS[3], 'XX', tonumber(score) + extra, ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl + extra) end
publish_record(KEYS[1], ARGV[1], ARGV[5])
return 1
"""
)

# KEYS[1] record; ARGV job id, answers channel, done channel, then (question key, answer json)
# pairs. Answers questions of an input_required job, all or none: each must be pending (an answer
# is taken once, so a replay finds nothing to answer). Returns {'ok'}, {'missing'},
# {'not_waiting', status} or {'unknown', key}. Each answer is stored and pushed to the worker
# holding the backend's request; with no question left the job is running again, and its
# waiters hear so.
_ANSWER = (
    _STILL_ASKING
    + _PUBLISH_RECORD
    + """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'missing'} end
if st ~= 'input_required' then return {'not_waiting', st} end
for i = 4, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], 'ask:' .. ARGV[i]) == 0 then return {'unknown', ARGV[i]} end
end
for i = 4, #ARGV, 2 do
  redis.call('HDEL', KEYS[1], 'ask:' .. ARGV[i])
  redis.call('HSET', KEYS[1], 'answer:' .. ARGV[i], ARGV[i + 1])
  redis.call('PUBLISH', ARGV[2], ARGV[1] .. ' ' .. ARGV[i] .. ' ' .. ARGV[i + 1])
end
if not still_asking() then
  redis.call('HSET', KEYS[1], 'status', 'running')
  publish_record(KEYS[1], ARGV[1], ARGV[3])
end
return {'ok'}
"""
)

# KEYS[1] record; ARGV question key, job id, done channel. The worker takes a question back (no
# answer in time) or takes its answer: returns the answer json if one came (the field is removed
# either way), else withdraws the question (the job is running again once none is left, and its
# waiters hear so) and returns nil.
_TAKE = (
    _STILL_ASKING
    + _PUBLISH_RECORD
    + """
local answer = redis.call('HGET', KEYS[1], 'answer:' .. ARGV[1])
redis.call('HDEL', KEYS[1], 'answer:' .. ARGV[1])
if answer then return answer end
if redis.call('HDEL', KEYS[1], 'ask:' .. ARGV[1]) == 1 and not still_asking()
   and redis.call('HGET', KEYS[1], 'status') == 'input_required' then
  redis.call('HSET', KEYS[1], 'status', 'running')
  publish_record(KEYS[1], ARGV[2], ARGV[3])
end
return false
"""
)

CANCELLED_ERROR: JobError = {"type": "cancelled", "message": "cancelled on request"}


@dataclass(frozen=True)
class Admission:
    """What enqueueing did: `ok` (the new record), `team_full`, `queue_full`, `breaker_open` (nothing
    written), or
    `duplicate` (the idempotency key already names `existing`; `same_request` if the earlier job
    was asked with the same request)."""

    outcome: Literal["ok", "team_full", "queue_full", "duplicate", "breaker_open"]
    record: JobRecord | None
    existing: str | None = None
    same_request: bool = False
    # breaker_open: when the gateway's circuit lets a probe through.
    retry_after_s: float = 0.0


@dataclass(frozen=True)
class Claim:
    """One job a worker claimed: what arq's pickup read, and what our record said before."""

    job_id: str
    job: bytes | None  # arq's serialized job; None once it has expired
    job_try: int  # arq's try counter, this try included
    aborted: bool  # an abort was requested before the job started
    previous: str  # the record's status before the claim ("missing" once it has expired)
    attempts: int
    created: float  # when it was enqueued (epoch seconds)


@dataclass(frozen=True)
class ArqEnd:
    """What a worker's finish writes besides the outcome: arq's serialized JobResult and who ran
    it (arq's side), and the job's latest progress if it is not in the record yet."""

    result: bytes
    worker: str
    progress: dict[str, Any] | None = None


# A job's end as `JobStore.finish_many` takes it: id, outcome, and arq's side (None outside a worker).
JobEnd = tuple[str, Envelope, ArqEnd | None]


class JobStore:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self.done_channel = settings.key("jobs", "done")
        # New jobs: a token for one worker. Aborts: a broadcast, since only the runner can act.
        self.wake_list = settings.key("workers", "wake-list")
        self.wake_channel = settings.key("workers", "wake")
        self.events_channel = settings.key("jobs", "events")
        self._enqueue = redis.register_script(_ENQUEUE)
        self._claim = redis.register_script(_CLAIM)
        self._finish = redis.register_script(_FINISH)
        self._hand_back = redis.register_script(_HAND_BACK)
        self._beat = redis.register_script(_BEAT)
        self.beats_key = settings.key("workers", "beats")
        self._cancel = redis.register_script(_CANCEL)
        # Answers to questions jobs asked (shared/jobs/schemas.py ASK_PREFIX), for their workers.
        self.answers_channel = settings.key("jobs", "answers")
        self._ask = redis.register_script(_ASK)
        self._answer = redis.register_script(_ANSWER)
        self._take = redis.register_script(_TAKE)

    @property
    def redis(self) -> Redis:
        return self._redis

    def _key(self, job_id: str) -> str:
        return self._settings.key("job", job_id)

    def in_flight_key(self, team: str) -> str:
        return self._settings.key("team", team, "in-flight")

    def tasks_key(self, team: str) -> str:
        """The team's tool-call jobs by creation time: what MCP `tasks/list` pages through."""
        return self._settings.key("team", team, "tasks")

    def recent_key(self, team: str | None) -> str:
        """Jobs by creation time, the newest RECENT_JOBS_KEPT: the team's, or (None) every team's."""
        return self._settings.key("team", team, "recent") if team else self._settings.key("jobs", "recent")

    @property
    def _record_ttl(self) -> int:
        # Outlives the longest a job can wait and run, then the retention time.
        s = self._settings
        return int(s.queue_ttl_s + s.max_backend_timeout_s + s.result_ttl_s)

    def _fields(self, job: PreparedJob) -> dict[str, str]:
        return {
            "id": job.id,
            "kind": job.kind.value,
            "item": job.item,
            "team": job.team or "",
            "status": JobStatus.QUEUED.value,
            "created_at": utc_iso(),
            "created_ts": repr(time.time()),
            "attempts": "0",
        }

    async def enqueue(self, job: PreparedJob) -> Admission:
        """Admit the job (its idempotency key, the queue's cap, its team's in-flight limit), then
        write record, arq job and worker wake-up in one script: one round trip. An admitted job's
        record needs no read: it is what was written.

        It writes what `ArqRedis.enqueue_job` writes (the serialized job under arq's job key,
        the id in the queue's sorted set) minus its WATCH/EXISTS guard against a reused id,
        which fresh random ids make moot.
        """
        return (await self.enqueue_many([job]))[0]

    async def enqueue_many(self, jobs: Sequence[PreparedJob]) -> list[Admission]:
        """`enqueue` for several jobs in one round trip, admitted in order (see _ENQUEUE)."""
        s = self._settings
        # The latest a job can still be in flight: its queue wait, its run, and some slack.
        horizon_ms = int((s.queue_ttl_s + s.max_backend_timeout_s + 60) * 1000)
        keys: list[str] = []
        args: list[str | int | float | bytes] = []
        written: list[dict[str, str]] = []
        for job in jobs:
            job_id, team = job.id, job.team
            record = self._key(job_id)
            now_ms = timestamp_ms()
            fields = self._fields(job)
            limit = s.team_max_in_flight if team else 0
            slot = self.in_flight_key(team) if team else ""
            if limit:
                fields["slot"] = slot
            written.append(fields)
            keys += [
                record,
                job_key_prefix + job_id,
                s.queue_name,
                slot or record,
                self.tasks_key(team) if team and job.kind is JobKind.CALL_TOOL else record,
                self._idempotency_key(job) or record,
                self.recent_key(team) if team else record,
                self.recent_key(None),
                # Discovery is how an admin checks a gateway: the breaker gates calls only.
                record
                if job.kind is JobKind.DISCOVER
                else breaker_key(s, str(job.payload["backend"]["gateway_id"])),
            ]
            args += [
                job_id,
                now_ms,
                limit,
                horizon_ms,
                self._record_ttl,
                serialize_job(job.kind.value, (job.payload,), {}, None, now_ms, serializer=job_serializer),
                int(s.queue_ttl_s * 1000),
                self.wake_list,
                s.queue_max_jobs,
                # Only a keyed job is ever compared: the others skip hashing their payload.
                job.fingerprint if job.idempotency_key is not None else "",
                RECENT_JOBS_KEPT,
                s.breaker_failures,
                s.breaker_open_s,
                2 * len(fields),
                *(item for pair in fields.items() for item in pair),
            ]
        answers = await self._enqueue(keys=keys, args=args)
        return [_admission(*one) for one in zip(answers, jobs, written, strict=True)]

    def _idempotency_key(self, job: PreparedJob) -> str | None:
        """Keys are per team: two teams' clients may pick the same key without meeting."""
        if job.idempotency_key is None:
            return None
        digest = hashlib.sha256(job.idempotency_key.encode()).hexdigest()
        return self._settings.key("idempotency", job.team or "-", digest)

    async def get(self, job_id: str) -> JobRecord | None:
        raw = await self._redis.hgetall(self._key(job_id))  # type: ignore[misc]
        return JobRecord.from_hash(raw) if raw else None

    def running_key(self, worker: str) -> str:
        """The ids of the jobs `worker` has claimed and not yet finished or handed back."""
        return f"{self._settings.key('worker')}:{worker}:jobs"

    async def running(self, worker: str) -> list[str]:
        """The jobs `worker` has claimed and not yet finished or handed back."""
        ids = await self._redis.smembers(self.running_key(worker))  # type: ignore[misc]
        return [i.decode() for i in ids]

    async def claim(self, worker: str, most: int) -> list[Claim]:
        """Claim up to `most` due jobs for `worker` (see _CLAIM): one round trip, no race."""
        rows = await self._claim(
            keys=[self._settings.queue_name, abort_jobs_ss, self.running_key(worker)],
            args=[
                timestamp_ms(),
                most,
                self._settings.job_lock_ms,
                worker,
                utc_iso(),
                self._key(""),
                in_progress_key_prefix,
                retry_key_prefix,
                job_key_prefix,
                self.done_channel,
            ],
        )
        return [
            Claim(
                job_id=job_id.decode(),
                job=job,
                job_try=int(job_try),
                aborted=bool(aborted),
                previous=previous.decode(),
                attempts=int(attempts),
                created=float(created),
            )
            for job_id, job, job_try, aborted, previous, attempts, created in rows
        ]

    async def hand_back(self, job_id: str, worker: str) -> None:
        """Make a job its worker could not finish due again at once (see _HAND_BACK)."""
        await self._hand_back(
            keys=[
                in_progress_key_prefix + job_id,
                self._settings.queue_name,
                self.running_key(worker),
                self.wake_list,
            ],
            args=[job_id, timestamp_ms()],
        )

    async def beat(self, worker: str, reap: bool) -> int:
        """Record that `worker` is alive; with `reap`, hand on the jobs of workers whose beat
        lapsed (see _BEAT). Returns how many jobs were handed on."""
        now = timestamp_ms()
        handed = await self._beat(
            keys=[self.beats_key, self._settings.queue_name, self.wake_list],
            args=[
                now,
                worker,
                now - int(self._settings.worker_dead_after_s * 1000),
                int(reap),
                f"{self._settings.key('worker')}:",
                in_progress_key_prefix,
            ],
        )
        return int(handed)

    async def live_workers(self) -> list[str]:
        """Workers whose beat has not lapsed."""
        since = timestamp_ms() - int(self._settings.worker_dead_after_s * 1000)
        ids = await self._redis.zrangebyscore(self.beats_key, since, "+inf")
        return [i.decode() for i in ids]

    async def leave(self, worker: str) -> None:
        """A worker that stops cleanly: no beat to lapse, nothing left to hand on."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.beats_key, worker)
            pipe.delete(self.running_key(worker))
            await pipe.execute()

    async def queue_depth(self) -> int:
        """Jobs waiting for a worker (running ones carry a future score, see _CLAIM)."""
        return int(await self._redis.zcount(self._settings.queue_name, "-inf", timestamp_ms()))

    async def finish(self, job_id: str, envelope: Envelope, arq_end: ArqEnd | None = None) -> bool:
        """Record the outcome; False if the job had already ended (for example it was cancelled).
        A worker passes `arq_end`, to end the job on arq's side in the same round trip."""
        return (await self.finish_many([(job_id, envelope, arq_end)]))[0]

    async def finish_many(self, ends: Sequence[JobEnd]) -> list[bool]:
        """`finish` for several jobs in one round trip (see _FINISH)."""
        keys: list[str] = []
        args: list[str | int | bytes] = [
            self._settings.result_ttl_s,
            self.done_channel,
            PUBLISH_WHOLE_MAX_BYTES,
            self._settings.result_ttl_s * 1000,
        ]
        for job_id, envelope, arq_end in ends:
            if envelope.get("ok"):
                status, result, error = JobStatus.COMPLETED, job_serializer(envelope.get("result")), b""
            else:
                err = envelope.get("error") or {"type": "error", "message": "unknown error"}
                status = JobStatus.CANCELLED if err["type"] == "cancelled" else JobStatus.FAILED
                result, error = b"", job_serializer(err)
            record = self._key(job_id)
            if arq_end is None:
                keys += [record] * 8
            else:
                keys += [
                    record,
                    result_key_prefix + job_id,
                    in_progress_key_prefix + job_id,
                    retry_key_prefix + job_id,
                    job_key_prefix + job_id,
                    self._settings.queue_name,
                    abort_jobs_ss,
                    self.running_key(arq_end.worker),
                ]
            progress = job_serializer(arq_end.progress) if arq_end and arq_end.progress else b""
            args += [
                job_id,
                status.value,
                utc_iso(),
                result,
                error,
                arq_end.result if arq_end else b"",
                progress,
            ]
        applied = await self._finish(keys=keys, args=args)
        return [bool(one) for one in applied]

    async def ask(self, job_id: str, key: str, question: dict[str, Any], extend_s: float) -> bool:
        """Put the question in the record and make the job input_required (see _ASK); False if
        the job is no longer running (cancelled, or ended)."""
        asked = await self._ask(
            keys=[self._key(job_id), in_progress_key_prefix + job_id, self._settings.queue_name],
            args=[job_id, key, json.dumps(question), int(extend_s * 1000), self.done_channel],
        )
        return bool(asked)

    async def answer(self, job_id: str, answers: dict[str, dict[str, Any]]) -> tuple[str, str]:
        """Answer pending questions (see _ANSWER): ("ok", ""), ("missing", ""), ("not_waiting",
        status) or ("unknown", key)."""
        pairs = [part for key, body in answers.items() for part in (key, json.dumps(body))]
        reply = await self._answer(
            keys=[self._key(job_id)], args=[job_id, self.answers_channel, self.done_channel, *pairs]
        )
        return _text(reply[0]), _text(reply[1]) if len(reply) > 1 else ""

    async def take_answer(self, job_id: str, key: str) -> dict[str, Any] | None:
        """The answer to the question, if one came; else the question is withdrawn (see _TAKE)."""
        raw = await self._take(keys=[self._key(job_id)], args=[key, job_id, self.done_channel])
        return json.loads(raw) if raw else None

    async def stored_answer(self, job_id: str, key: str) -> dict[str, Any] | None:
        """The answer to the question if one came (read only)."""
        raw = await self._redis.hget(self._key(job_id), ANSWER_PREFIX + key)  # type: ignore[misc]
        return json.loads(raw) if raw else None

    async def add_attempt(self, job_id: str) -> None:
        """Count one more attempt: a call sent again after its session broke under it."""
        await self._redis.hincrby(self._key(job_id), "attempts", 1)  # type: ignore[misc]

    async def publish_events(self, events: dict[str, list[JobEvent]], live: set[str]) -> None:
        """Store each job's latest progress in its record (GET /v1/jobs/{id}), and push the events
        of the jobs in `live`, in order, to whoever relays them (the MCP front door sends them on as
        notifications/progress and notifications/message): one pipeline, one round trip, one
        message of a line per event."""
        lines = []
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id, batch in events.items():
                latest = None
                for event in batch:
                    if job_id in live:
                        lines.append(f"{job_id} {json.dumps(event, separators=(',', ':'))}")
                    if event["type"] == "progress":
                        latest = event
                if latest is not None:
                    pipe.hset(self._key(job_id), "progress", json.dumps(record_progress(latest)))
            if lines:
                pipe.publish(self.events_channel, "\n".join(lines))
            await pipe.execute()

    async def task_ids(self, team: str, offset: int, limit: int) -> list[str]:
        """The team's tool-call job ids, newest first."""
        ids = await self._redis.zrevrange(self.tasks_key(team), offset, offset + limit - 1)
        return [_text(i) for i in ids]

    async def recent_ids(self, key: str, after: tuple[int, str] | None, count: int) -> list[tuple[int, str]]:
        """Up to `count` (created ms, job id) of index `key`, newest first, after position `after`.

        Entries of one millisecond are ordered by id (descending, as ZREVRANGE orders them), so
        a position names one place even when jobs share a creation time, and a page never
        repeats or skips an entry when newer jobs arrive meanwhile (an offset would shift).
        """
        if after is None:
            raw = await self._redis.zrevrange(key, 0, count - 1, withscores=True)
            return [(int(score), _text(member)) for member, score in raw]
        created, last_id = after
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(key, created, created)
            pipe.zrevrangebyscore(key, f"({created}", "-inf", start=0, num=count, withscores=True)
            same_ms, older = await pipe.execute()
        ties = sorted((m for m in map(_text, same_ms) if m < last_id), reverse=True)
        entries = [(created, m) for m in ties] + [(int(score), _text(m)) for m, score in older]
        return entries[:count]

    async def running_count(self) -> int:
        """Jobs a worker has started and not finished (their queue score is in the future, see _START)."""
        return int(await self._redis.zcount(self._settings.queue_name, f"({timestamp_ms()}", "+inf"))

    async def get_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self._key(job_id))
            raws = await pipe.execute()
        return [JobRecord.from_hash(raw) if raw else None for raw in raws]

    async def request_cancel(self, job_id: str) -> str:
        state = await self._cancel(
            keys=[self._key(job_id)],
            args=[
                job_id,
                utc_iso(),
                self._settings.result_ttl_s,
                self.done_channel,
                json.dumps(CANCELLED_ERROR),
            ],
        )
        return str(state.decode() if isinstance(state, bytes) else state)

    async def needs_reconcile(self, job_id: str) -> bool:
        """One round trip: has this job ended (or could `reconcile` end it) without a push?"""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self._key(job_id), ["status", "created_ts"])
            pipe.exists(result_key_prefix + job_id)
            (status, created), has_arq_result = await pipe.execute()
        if (
            status is None
            or status.decode() not in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.INPUT_REQUIRED)
            or has_arq_result
        ):
            return True
        return (
            status.decode() == JobStatus.QUEUED
            and time.time() - float(created or 0) > self._settings.queue_ttl_s
        )

    async def reconcile(self, job_id: str) -> JobRecord | None:
        """Fold arq's stored result (or an expired queue wait) into a record that is not terminal."""
        record = await self.get(job_id)
        if record is None or record.status.terminal:
            return record
        outcome = await self._arq_outcome(job_id)
        if outcome is None and record.status is JobStatus.QUEUED:
            created = float((await self._redis.hget(self._key(job_id), "created_ts")) or 0)  # type: ignore[misc]
            if time.time() - created > self._settings.queue_ttl_s:
                outcome = {
                    "ok": False,
                    "error": {
                        "type": "expired",
                        "message": f"no worker picked the job up within {self._settings.queue_ttl_s}s",
                    },
                }
        if outcome is not None:
            await self.finish(job_id, outcome)
            return await self.get(job_id)
        return record

    async def _arq_outcome(self, job_id: str) -> Envelope | None:
        info = await Job(job_id, self._redis, _deserializer=job_deserializer).result_info()
        if info is None:
            return None
        value = info.result
        if info.success and isinstance(value, dict) and "ok" in value:
            return value  # type: ignore[return-value]
        exc = value if isinstance(value, dict) else {}
        name = str(exc.get("exception", "error"))
        message = str(exc.get("message") or name)
        if name == "CancelledError":
            return {"ok": False, "error": CANCELLED_ERROR}
        if message == "job expired":
            return {
                "ok": False,
                "error": {"type": "expired", "message": "the job expired before a worker ran it"},
            }
        return {"ok": False, "error": {"type": "worker_error", "message": f"{name}: {message}"}}


def record_progress(event: JobEvent) -> dict[str, Any]:
    """What a job's record keeps of a progress event (GET /v1/jobs/{id} reports it)."""
    return {k: event.get(k) for k in ("progress", "total", "message")}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _admission(answer: list[bytes], job: PreparedJob, fields: dict[str, str]) -> Admission:
    """One job's answer from _ENQUEUE."""
    outcome = answer[0].decode()
    if outcome == "ok":
        return Admission("ok", JobRecord.from_fields(fields))
    if outcome == "duplicate":
        return Admission("duplicate", None, answer[1].decode(), answer[2].decode() == job.fingerprint)
    if outcome == "breaker_open":
        return Admission("breaker_open", None, retry_after_s=float(answer[1]))
    return Admission(outcome, None)  # type: ignore[arg-type]
