"""What load.py reads while the load runs: process CPU from /proc, Redis counters, pg_stat_activity.

Everything is read from outside the processes under test (no metrics endpoint, no Redis command
on the queue's keys while the window runs), so measuring does not change what is measured. Only
`job_phases`, after the window, reads job records.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import psycopg
import redis

from bench._harness import cpu_seconds, libpq

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, every process of every user."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return 0.0


@dataclass
class Snapshot:
    """Counters at one instant; two of them make a window."""

    t: float
    cpu: dict[str, float]  # process key ("api", "worker0", "postgres:1234", ...) -> CPU seconds
    machine_busy: float
    machine_total: float
    commands: dict[str, int]  # Redis command -> calls so far (commands inside scripts included)
    redis_reads: int  # read events: about one per round trip (a pipeline is one)


def snapshot(pids: dict[str, int], client: redis.Redis) -> Snapshot:
    cpu = {key: seconds for key, pid in pids.items() if (seconds := cpu_seconds(pid)) is not None}
    busy, total = machine_cpu_seconds()
    stats = cast(dict[str, Any], client.info("commandstats"))
    commands = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}
    reads = int(cast(dict[str, Any], client.info("stats"))["total_reads_processed"])
    return Snapshot(time.monotonic(), cpu, busy, total, commands, reads)


def group_of(key: str) -> str:
    """Process keys grouped as the report shows them: worker0, worker1 -> workers; postgres:N -> postgres."""
    if key.startswith("worker"):
        return "workers"
    return key.split(":", 1)[0]


@dataclass
class Window:
    """What happened between two snapshots."""

    seconds: float
    cpu: dict[str, float]  # process key -> CPU seconds spent in the window
    machine_busy: float
    machine_total: float
    commands: Counter[str]
    redis_reads: int

    @classmethod
    def between(cls, a: Snapshot, b: Snapshot) -> Window:
        # A process that started inside the window (a new PostgreSQL session) counts from zero.
        cpu = {key: b.cpu[key] - a.cpu.get(key, 0.0) for key in b.cpu}
        commands = Counter({k: v - a.commands.get(k, 0) for k, v in b.commands.items()})
        return cls(
            seconds=b.t - a.t,
            cpu=cpu,
            machine_busy=b.machine_busy - a.machine_busy,
            machine_total=b.machine_total - a.machine_total,
            commands=+commands,
            redis_reads=b.redis_reads - a.redis_reads,
        )

    def cpu_by_group(self) -> dict[str, float]:
        groups: dict[str, float] = {}
        for key, seconds in self.cpu.items():
            groups[group_of(key)] = groups.get(group_of(key), 0.0) + seconds
        return groups


@dataclass
class ActivitySample:
    t: float
    idle_in_txn: int
    active: int
    idle: int
    max_xact_age_ms: float


@dataclass
class PgSampler:
    """A thread that reads pg_stat_activity for the bench database every `interval` seconds,
    and the RSS of the processes under test; it also keeps the PostgreSQL sessions' pids, so their
    CPU can be read too."""

    database_url: str
    pids: dict[str, int]
    interval: float = 0.5
    samples: list[ActivitySample] = field(default_factory=list)
    session_pids: set[int] = field(default_factory=set)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pg-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        with psycopg.connect(
            libpq(self.database_url), autocommit=True, application_name="mcpq-bench-sampler"
        ) as conn:
            next_at = time.monotonic()
            while not self._stop.is_set():
                self._sample(conn)
                next_at += self.interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _sample(self, conn: psycopg.Connection[Any]) -> None:
        rows = conn.execute(
            "SELECT pid, coalesce(state, '?'), "
            "coalesce(extract(epoch FROM now() - xact_start) * 1000, 0) "
            "FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchall()
        states = Counter(state for _, state, _ in rows)
        self.session_pids.update(pid for pid, _, _ in rows)
        self.samples.append(
            ActivitySample(
                t=time.monotonic(),
                idle_in_txn=states["idle in transaction"] + states["idle in transaction (aborted)"],
                active=states["active"],
                idle=states["idle"],
                max_xact_age_ms=round(max((float(age) for _, _, age in rows), default=0.0), 1),
            )
        )
        by_group: dict[str, float] = {}
        for key, pid in self.pids.items():
            by_group[group_of(key)] = by_group.get(group_of(key), 0.0) + rss_mb(pid)
        for group, mb in by_group.items():
            self.peak_rss_mb[group] = max(self.peak_rss_mb.get(group, 0.0), round(mb, 1))


def _epoch(value: bytes | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.decode().replace("Z", "+00:00")).timestamp()


def job_phases(client: redis.Redis, prefix: str, newest: int = 3000) -> dict[str, dict[str, float]]:
    """Where the completed jobs among the newest tool calls spent their time, from their records:
    queued (enqueued to claimed by a worker) and running (claimed to finished: the backend call
    plus the worker's own work), p50/p90 in seconds. What a caller waited beyond both is the
    API's part. The calls are found in the teams' task indexes (JobStore.tasks_key)."""
    ids: list[bytes] = []
    for index in client.scan_iter(match=f"{prefix}:team:*:tasks"):
        ids += cast(list[bytes], client.zrevrange(index, 0, newest - 1))
    with client.pipeline(transaction=False) as pipe:
        for job_id in ids:
            record = f"{prefix}:job:{job_id.decode()}"
            pipe.hmget(record, ["status", "created_at", "started_at", "finished_at"])
        rows = pipe.execute()
    queued, running = [], []
    for status, created, started, finished in rows:
        times = [_epoch(created), _epoch(started), _epoch(finished)]
        if status == b"completed" and None not in times:
            c, s, f = cast(list[float], times)
            queued.append(s - c)
            running.append(f - s)
    return {"queued": _spread(queued), "running": _spread(running)}


def _spread(values: list[float]) -> dict[str, float]:
    ordered = sorted(values) or [float("nan")]
    at = {q: ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] for q in (0.5, 0.9)}
    return {"p50": round(at[0.5], 4), "p90": round(at[0.9], 4), "jobs": len(values)}
