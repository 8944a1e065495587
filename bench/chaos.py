"""Chaos run: slow calls while workers are SIGKILLed and Redis restarts; is any accepted job lost?

--users users each submit an async job of a slow tool (POST /v1/tools/{ref}/jobs), follow it to
its end (GET /v1/jobs/{id}?wait=), and submit the next, for --duration seconds. Half the users
call `sleep` (not safe to run twice), half `sleep_idempotent` (idempotentHint). Meanwhile:
- every --kill-every seconds one worker (in turn) is SIGKILLed and started again at once;
- at --redis-restart-at seconds the run's Redis (a private redis-server on its own port with
  appendonly yes, never the shared one) is stopped (--redis-stop term: a clean shutdown, kill:
  a crash) and started again --redis-down seconds later on the same port and data;
- a process that exits on its own (API or worker) is recorded and started again, as an
  orchestrator would.
After the load, every accepted job id is read back until it is terminal, for at most
--straggler-wait seconds. The report lists accepted, completed (by attempts), failed by error
type, submissions refused (by status and error type), and lost: accepted but never terminal.
It is a correctness run, not a throughput one: the driver is a light asyncio client (wrk could
not collect the job ids). Every loop is bounded; the run stops by itself.

    python bench/chaos.py                                  # 200 users, 5 s calls, 120 s
    python bench/chaos.py --duration 60 --users 50 --redis-stop kill
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._harness import ROOT, RedisServer, Stack, private_redis, raise_open_files_limit, stack

TOOLS = ("sleep", "sleep_idempotent")


@dataclass
class Job:
    id: str
    tool: str
    accepted_at: float  # wall clock
    record: dict[str, Any] | None = None  # the last GET /v1/jobs/{id} body
    unknown: bool = False  # GET answered 404: the job record is gone

    @property
    def terminal(self) -> bool:
        return self.record is not None and self.record["status"] in ("completed", "failed", "cancelled")


@dataclass
class Tally:
    jobs: list[Job] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)  # submissions not accepted
    poll_errors: Counter[str] = field(default_factory=Counter)  # GETs that failed (then retried)
    events: list[tuple[float, str]] = field(default_factory=list)  # (wall clock, what happened)

    def event(self, what: str) -> None:
        self.events.append((time.time(), what))
        print(f"{datetime.now(UTC):%H:%M:%S} {what}", flush=True)


def error_key(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} (not JSON)"
    kind = body.get("error") if isinstance(body, dict) else None
    return f"{response.status_code} {kind or '?'}"


async def follow(api: httpx.AsyncClient, job: Job, deadline: float, tally: Tally, wait: float) -> None:
    """GET the job until it is terminal, 404, or the deadline (monotonic) passes."""
    while not job.terminal and not job.unknown and time.monotonic() < deadline:
        left = max(0.0, min(wait, deadline - time.monotonic()))
        try:
            r = await api.get(f"/v1/jobs/{job.id}", params={"wait": round(left, 1)}, timeout=left + 30)
        except httpx.HTTPError as exc:
            tally.poll_errors[f"transport {type(exc).__name__}"] += 1
            await asyncio.sleep(1.0)
            continue
        if r.status_code == 200:
            job.record = r.json()
        elif r.status_code == 404:
            job.unknown = True
        else:
            tally.poll_errors[error_key(r)] += 1
            await asyncio.sleep(1.0)


async def user(
    api: httpx.AsyncClient, ref: str, tool: str, args: argparse.Namespace, stop_at: float, tally: Tally
) -> None:
    n = 0
    while time.monotonic() < stop_at:
        n += 1
        body = {"arguments": {"seconds": args.sleep, "tag": f"{tool}-{n}"}}
        try:
            r = await api.post(f"/v1/tools/{ref}/jobs", json=body, timeout=30)
        except httpx.HTTPError as exc:
            tally.refused[f"transport {type(exc).__name__}"] += 1
            await asyncio.sleep(1.0)
            continue
        if r.status_code != 202:
            tally.refused[error_key(r)] += 1
            await asyncio.sleep(1.0)  # a refusal must not turn a user into a hot loop
            continue
        job = Job(r.json()["job_id"], tool, time.time())
        tally.jobs.append(job)
        # Follow it while the load lasts; the stragglers are read back after the load.
        await follow(api, job, stop_at, tally, wait=30.0)


class Supervisor:
    """Notes every process that exits on its own and starts it again, as an orchestrator would;
    while Redis is down it only notes (a worker that cannot reach Redis would exit at once)."""

    def __init__(self, s: Stack, tally: Tally) -> None:
        self.s = s
        self.tally = tally
        self.noted: set[int] = set()

    def check(self, *, restart: bool = True) -> None:
        for name, proc in list(self.s.procs.items()):
            if proc.poll() is None:
                continue
            if proc.pid not in self.noted:
                self.noted.add(proc.pid)
                self.tally.event(f"{name} (pid {proc.pid}) exited on its own with code {proc.returncode}")
            if restart:
                self.s.processes.restart(name)
                self.tally.event(f"{name} started again")

    async def watch(self, seconds: float, *, restart: bool = True) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.check(restart=restart)
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


async def chaos(
    s: Stack, redis_server: RedisServer, args: argparse.Namespace, tally: Tally, supervisor: Supervisor
) -> None:
    """The faults, on schedule, until the load ends."""
    started = time.monotonic()
    workers = sorted(name for name in s.procs if name.startswith("worker"))
    next_kill, kills, redis_restarted = args.kill_every, 0, False
    while (elapsed := time.monotonic() - started) < args.duration:
        if elapsed >= next_kill:
            name = workers[kills % len(workers)]
            await asyncio.to_thread(s.processes.kill, name, signal.SIGKILL)
            tally.event(f"SIGKILL {name} (pid {s.procs[name].pid}); started again")
            s.processes.restart(name)
            kills += 1
            next_kill += args.kill_every
        if not redis_restarted and elapsed >= args.redis_restart_at:
            redis_restarted = True
            sig = signal.SIGKILL if args.redis_stop == "kill" else signal.SIGTERM
            await asyncio.to_thread(redis_server.stop, sig)
            tally.event(f"Redis stopped ({sig.name}); down for {args.redis_down:g} s")
            await supervisor.watch(args.redis_down, restart=False)
            await asyncio.to_thread(redis_server.start)
            tally.event("Redis started again (same port, same appendonly data)")
        await supervisor.watch(0.5)


async def register(s: Stack) -> tuple[str, str]:
    team = f"chaos-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(
        base_url=s.api, headers={"Authorization": f"Bearer {s.token}"}, timeout=60
    ) as admin:
        (await admin.post("/v1/teams", json={"name": team})).raise_for_status()
        gateway = {"name": team, "url": s.backend_url, "timeout_s": 600, "team": team}
        (await admin.post("/v1/gateways", json=gateway)).raise_for_status()
        minted = await admin.post("/v1/tokens", json={"name": "chaos", "team": team, "role": "member"})
        minted.raise_for_status()
    return team, str(minted.json()["token"])


async def drive(s: Stack, redis_server: RedisServer, args: argparse.Namespace) -> Tally:
    tally = Tally()
    team, token = await register(s)
    limits = httpx.Limits(max_connections=args.users + 10, max_keepalive_connections=args.users + 10)
    async with httpx.AsyncClient(
        base_url=s.api, headers={"Authorization": f"Bearer {token}"}, limits=limits
    ) as api:
        stop_at = time.monotonic() + args.duration
        tally.event(f"load: {args.users} users of {args.sleep:g} s calls for {args.duration:g} s")
        users = [
            user(api, f"{team}.{TOOLS[i % 2]}", TOOLS[i % 2], args, stop_at, tally) for i in range(args.users)
        ]
        supervisor = Supervisor(s, tally)
        await asyncio.gather(chaos(s, redis_server, args, tally, supervisor), *users)
        waiting = [job for job in tally.jobs if not job.terminal and not job.unknown]
        tally.event(
            f"load over; reading back {len(waiting)} unfinished jobs for up to {args.straggler_wait:g} s"
        )
        deadline = time.monotonic() + args.straggler_wait
        watching = asyncio.create_task(supervisor.watch(args.straggler_wait))
        await asyncio.gather(*(follow(api, job, deadline, tally, wait=30.0) for job in waiting))
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    return tally


def seconds_after_kill(job: Job, kills: list[float]) -> float | None:
    """For a job that ended, the seconds from the last worker kill before its end to its end."""
    if job.record is None or not job.record.get("finished_at"):
        return None
    finished = datetime.fromisoformat(job.record["finished_at"]).timestamp()
    before = [k for k in kills if k <= finished]
    return round(finished - before[-1], 1) if before else None


def summarise(args: argparse.Namespace, tally: Tally) -> dict[str, Any]:
    kills = [t for t, what in tally.events if what.startswith("SIGKILL")]
    per_tool: dict[str, Any] = {}
    for tool in TOOLS:
        jobs = [j for j in tally.jobs if j.tool == tool]
        ended = [j for j in jobs if j.terminal and j.record is not None]
        failed = Counter(
            (j.record.get("error") or {}).get("type", "?")
            for j in ended
            if j.record is not None and j.record["status"] != "completed"
        )
        lost = [j for j in jobs if not j.terminal]
        worker_lost_delays = sorted(
            d
            for j in ended
            if j.record is not None and (j.record.get("error") or {}).get("type") == "worker_lost"
            if (d := seconds_after_kill(j, kills)) is not None
        )
        per_tool[tool] = {
            "accepted": len(jobs),
            "completed": sum(1 for j in ended if j.record is not None and j.record["status"] == "completed"),
            "completed_by_attempts": dict(
                Counter(
                    j.record["attempts"]
                    for j in ended
                    if j.record is not None and j.record["status"] == "completed"
                )
            ),
            "failed_by_type": dict(failed),
            "lost": len(lost),
            "lost_unknown_404": sum(1 for j in lost if j.unknown),
            "lost_by_last_status": dict(
                Counter(j.record["status"] if j.record else "never read" for j in lost if not j.unknown)
            ),
            "lost_examples": [
                {"id": j.id, "record": j.record} for j in lost[:3] if j.record is not None or j.unknown
            ],
            "worker_lost_seconds_after_kill": worker_lost_delays,
        }
    return {
        "users": args.users,
        "sleep_s": args.sleep,
        "duration_s": args.duration,
        "workers": args.workers,
        "kill_every_s": args.kill_every,
        "redis_restart_at_s": args.redis_restart_at,
        "redis_stop": args.redis_stop,
        "straggler_wait_s": args.straggler_wait,
        "accepted": len(tally.jobs),
        "lost": sum(t["lost"] for t in per_tool.values()),
        "per_tool": per_tool,
        "refused": dict(tally.refused.most_common()),
        "poll_errors": dict(tally.poll_errors.most_common()),
        "events": [(datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S"), what) for t, what in tally.events],
    }


def write_report(summary: dict[str, Any], out: Path) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = [
        f"# Chaos run {out.name}",
        "",
        f"Command: `python bench/chaos.py {' '.join(sys.argv[1:])}`",
        "",
        f"{summary['users']} users of {summary['sleep_s']:g} s async calls for {summary['duration_s']:g} s, "
        f"{summary['workers']} workers, one SIGKILLed every {summary['kill_every_s']:g} s and restarted; "
        f"Redis (private, appendonly yes) stopped with {summary['redis_stop']} at "
        f"{summary['redis_restart_at_s']:g} s and restarted; stragglers read back for up to "
        f"{summary['straggler_wait_s']:g} s.",
        "",
        f"**accepted {summary['accepted']}, lost (accepted, never terminal) {summary['lost']}**",
        "",
        "| tool | accepted | completed (by attempts) | failed by type | lost | lost: last status seen "
        "| worker_lost, s after the kill |",
        "|---|---:|---|---|---:|---|---|",
        *(
            f"| {tool} | {t['accepted']} | {t['completed']} {t['completed_by_attempts']} | "
            f"{t['failed_by_type'] or '-'} | {t['lost']} | "
            f"{t['lost_by_last_status'] or '-'} (404: {t['lost_unknown_404']}) | "
            f"{summarise_delays(t['worker_lost_seconds_after_kill'])} |"
            for tool, t in summary["per_tool"].items()
        ),
        "",
        f"Submissions refused (not accepted, so not lost): {summary['refused'] or 'none'}",
        "",
        f"GETs that failed and were retried: {summary['poll_errors'] or 'none'}",
        "",
        "Events:",
        "",
        *(f"- {at} {what}" for at, what in summary["events"]),
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))


def summarise_delays(delays: list[float]) -> str:
    if not delays:
        return "-"
    return f"n={len(delays)}, min {delays[0]}, median {delays[len(delays) // 2]}, max {delays[-1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--sleep", type=float, default=5.0, help="seconds each call's tool sleeps")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load and faults")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kill-every", type=float, default=20.0)
    parser.add_argument("--redis-restart-at", type=float, default=70.0)
    parser.add_argument("--redis-stop", choices=["term", "kill"], default="term")
    parser.add_argument("--redis-down", type=float, default=3.0, help="seconds Redis stays down")
    parser.add_argument("--straggler-wait", type=float, default=60.0)
    parser.add_argument(
        "--code", type=Path, default=ROOT, help="the checkout to run the API and workers from"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    raise_open_files_limit()
    out = args.out / (datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-chaos")
    (out / "raw").mkdir(parents=True)
    env = {"MCPQ_TEAM_MAX_IN_FLIGHT": str(args.users * 4), "MCPQ_MAX_WAIT_S": "600"}
    with (
        private_redis(appendonly=True) as redis_server,
        stack(
            workers=args.workers,
            extra_env=env,
            log_dir=out / "raw",
            code=args.code,
            redis_url=redis_server.url,
        ) as s,
    ):
        tally = asyncio.run(drive(s, redis_server, args))
    summary = summarise(args, tally)
    write_report(summary, out)
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()
