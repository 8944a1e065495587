"""Load benchmark: concurrent MCP tool calls through the gateway, driven by wrk, priced per call.

Each run starts a private redis-server, the benchmark backend (bench/backend.py), the API and
--workers worker processes on a fresh database made strict (idle_in_transaction_session_timeout
= 1s: a session held across a slow call is killed and shows up), registers the backend, checks
one call, and then lets wrk (a C driver: it costs the machine little and never slows its users
down) hold --users connections, each a user calling POST /v1/tools/{ref}/call back to back for
--duration seconds. bench/wrk_call.lua tags every request and checks every answer.

Over the steady window (from --warmup seconds after the start to the end of the load) it
reports calls/s, latency percentiles, errors by status and type, the CPU each process spent per
completed call (from /proc: API, each worker, backend, Redis, PostgreSQL, wrk itself), Redis
commands and round trips per call (INFO commandstats / total_reads_processed deltas; the Redis
server is private to the run, so nothing else counts), and the idle-in-transaction sessions.
Results go to bench/results/<timestamp>/: report.md, summary.json, and under raw/<run>/ each
run's logs, wrk's records and activity.csv (pg_stat_activity over time).

    python bench/load.py --shape echo                   # 100 users, echo, 30 s, 2 workers
    python bench/load.py --shape slow                   # 1000 users, 5 s tool, 60 s, 2 workers
    python bench/load.py --shape seed                   # 4000 users, 10 s tool, 120 s, 4 workers
    python bench/load.py --shape seed --ramp 10         # the users' first calls spread over 10 s
    python bench/load.py --shape echo --duration 20     # any option overrides the shape
    python bench/load.py --shape echo --code ../base --code .   # two checkouts, one after the other

--code DIR runs the API and workers from another checkout (bench/compare.sh REV exports a
commit and runs it and this checkout one after the other). A worker starts with
`python -m workers` where DIR has workers/__main__.py, else `arq workers.main.WorkerSettings`.
The backend always runs from this checkout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._harness import ROOT, Stack, private_redis, raise_open_files_limit, stack
from bench._probes import PgSampler, Snapshot, Window, job_phases, snapshot
from bench._stats import percentile

WRK = shutil.which("wrk") or "/usr/bin/wrk"
WRK_SCRIPT = ROOT / "bench" / "wrk_call.lua"
LOG_ERRORS = re.compile(r"ProtocolViolation|terminating connection|idle-in-transaction|Traceback")

SHAPES: dict[str, dict[str, Any]] = {
    "echo": {"users": 100, "sleep": 0.0, "duration": 30.0, "workers": 2},
    "slow": {"users": 1000, "sleep": 5.0, "duration": 60.0, "workers": 2},
    "seed": {"users": 4000, "sleep": 10.0, "duration": 120.0, "workers": 4},
}


@dataclass(frozen=True)
class Answer:
    status: int
    finished: float  # time.monotonic() seconds
    latency: float | None  # seconds; None when the answer does not carry its request's tag
    kind: str  # "-" for a good answer, else the error type


@dataclass
class WrkRun:
    answers: list[Answer]
    details: dict[str, str]  # "status type" -> the first such body
    summary: dict[str, Any]  # wrk's own figures (its WRKJSON line)
    started: float
    stdout: str
    log_errors: dict[str, int] = field(default_factory=dict)


def register(s: Stack, tool: str) -> tuple[str, str]:
    """A team, the backend as its gateway, and a member token: what the users call with."""
    team = f"load-{uuid.uuid4().hex[:6]}"
    with httpx.Client(base_url=s.api, headers={"Authorization": f"Bearer {s.token}"}, timeout=60) as admin:
        admin.post("/v1/teams", json={"name": team}).raise_for_status()
        admin.post(
            "/v1/gateways", json={"name": team, "url": s.backend_url, "timeout_s": 600, "team": team}
        ).raise_for_status()
        minted = admin.post("/v1/tokens", json={"name": "load", "team": team, "role": "member"})
        minted.raise_for_status()
    return f"{team}.{tool}", str(minted.json()["token"])


def check_one_call(api: str, ref: str, token: str, tool: str) -> None:
    """One call checked from Python before the load (it also warms the API's tool cache)."""
    args = {"text": "hello"} if tool == "echo" else {"seconds": 0, "tag": "hello"}
    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        r = client.post(f"/v1/tools/{ref}/call", json={"arguments": args})
    if r.status_code != 200 or r.json()["result"]["content"][0]["text"] != "hello":
        raise RuntimeError(f"the check call failed: {r.status_code} {r.text}")


class Measurement:
    """The snapshots of one run: idle before the load, then the steady window's two ends."""

    def __init__(self, s: Stack, redis_server_pid: int, redis_url: str, sampler: PgSampler) -> None:
        self.pids = {**s.processes.pids(), "redis": redis_server_pid, "harness": os.getpid()}
        self.client = redis.Redis.from_url(redis_url)
        self.sampler = sampler
        self.snapshots: list[Snapshot] = []
        self.key_prefix = s.processes.env["MCPQ_KEY_PREFIX"]
        self.phases: dict[str, dict[str, float]] = {}
        # The backend's own timing of its tool calls (bench/backend.py), for calls in the window.
        self.clock_url = s.backend_url.removesuffix("/mcp") + "/bench/clock"
        self.backend_clock: dict[str, Any] = {}

    def take(self) -> None:
        pids = {**self.pids, **{f"postgres:{pid}": pid for pid in list(self.sampler.session_pids)}}
        self.snapshots.append(snapshot(pids, self.client))

    def read_backend_clock(self, start: float, end: float) -> None:
        """The backend's timing of the calls that ended in the window. Read once the load is
        over: under it, a swamped backend may not answer for a long time. A side figure: a
        backend that cannot tell does not sink the run."""
        try:
            response = httpx.get(self.clock_url, params={"start": start, "end": end}, timeout=120)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            self.backend_clock = {"error": f"not read: {exc!r}"}
        else:
            self.backend_clock = response.json()


def run_wrk(
    args: argparse.Namespace, api: str, ref: str, token: str, out: Path, measure: Measurement
) -> WrkRun:
    """wrk for --duration seconds; a snapshot at --warmup and one just before wrk stops."""
    records = out / "wrk-records.txt"
    command = [
        WRK,
        "-t", str(min(args.threads, args.users)),
        "-c", str(args.users),
        "-d", f"{args.duration:g}s",
        "--timeout", f"{args.call_wait + 60:g}s",
        "-s", str(WRK_SCRIPT),
        api,
        "--", f"/v1/tools/{ref}/call", token, args.tool, f"{args.sleep:g}", f"{args.call_wait:g}",
    ]  # fmt: skip
    env = {**os.environ, "BENCH_WRK_RECORDS": str(records)}
    if args.ramp > 0:
        env["BENCH_WRK_RAMP_S"] = f"{args.ramp:g}"
    started = time.monotonic()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        measure.pids["wrk"] = proc.pid
        for offset in (args.warmup, args.duration - 0.5):
            time.sleep(max(0.0, started + offset - time.monotonic()))
            measure.take()
        # After the window's last snapshot: reading job records must not count in it.
        measure.phases = job_phases(measure.client, measure.key_prefix)
        stdout, _ = proc.communicate(timeout=args.duration + 120)
        measure.read_backend_clock(measure.snapshots[-2].t, measure.snapshots[-1].t)
    finally:
        if proc.poll() is None:  # only when something above failed
            proc.kill()
            proc.wait()
    text = stdout.decode(errors="replace")
    line = next((x for x in text.splitlines() if x.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{text}")
    answers, details = read_records(records)
    return WrkRun(answers, details, json.loads(line.removeprefix("WRKJSON ")), started, text)


def read_records(path: Path) -> tuple[list[Answer], dict[str, str]]:
    answers, details = [], {}
    for line in path.read_text().splitlines():
        if line.startswith("R "):
            _, status, finished_us, latency_us, kind = line.split(" ", 4)
            latency = int(latency_us) / 1e6 if int(latency_us) >= 0 else None
            answers.append(Answer(int(status), int(finished_us) / 1e6, latency, kind))
        elif line.startswith("D "):
            key, _, body = line[2:].partition("\t")
            details[key] = body
    return answers, details


def run_once(args: argparse.Namespace, code: Path, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True)
    per_worker = args.worker_max_jobs or math.ceil(args.users * 1.1 / args.workers) + 10
    env = {
        "MCPQ_DB_POOL_SIZE": str(args.db_pool),
        "MCPQ_DB_MAX_OVERFLOW": "0",
        "MCPQ_WORKER_MAX_JOBS": str(per_worker),
        "MCPQ_MAX_WAIT_S": "600",
        # All users are one team here; its in-flight cap must admit them all.
        "MCPQ_TEAM_MAX_IN_FLIGHT": str(args.users * 2),
        **dict(item.split("=", 1) for item in args.env),
    }
    with (
        private_redis() as redis_server,
        stack(
            workers=args.workers,
            extra_env=env,
            log_dir=out,
            db_settings={"idle_in_transaction_session_timeout": "1s"},
            backend_args=("--stateless",) if args.backend_stateless else (),
            api_args=("--backlog", "8192", "--timeout-keep-alive", "120"),
            code=code,
            redis_url=redis_server.url,
            pgbouncer=args.pgbouncer,
        ) as s,
    ):
        ref, token = register(s, args.tool)
        check_one_call(s.api, ref, token, args.tool)
        sampler = PgSampler(s.database_url, {**s.processes.pids(), "redis": redis_server.pid})
        sampler.start()
        measure = Measurement(s, redis_server.pid, redis_server.url, sampler)
        try:
            time.sleep(1.0)  # let the sampler find the PostgreSQL sessions
            measure.take()
            time.sleep(args.idle)
            measure.take()  # idle: what the processes cost with no load at all
            wrk = run_wrk(args, s.api, ref, token, out, measure)
            # Only what was logged during the load: a worker stopped with calls in flight logs
            # their cancellation, which is the teardown, not the run.
            wrk.log_errors = log_errors(out)
            if s.pgbouncer is not None:
                wrk.log_errors.update(pgbouncer_errors(s.pgbouncer.log_path))
        finally:
            sampler.stop()
    return summarise(args, code, out, wrk, measure, sampler)


def errors_by_kind(answers: list[Answer], wrk_summary: dict[str, Any]) -> dict[str, int]:
    errors = Counter(f"{a.status} {a.kind}" for a in answers if a.kind != "-" or a.status != 200)
    for kind, count in wrk_summary["errors"].items():
        if kind != "status" and count:  # "status" counts the non-2xx answers already listed
            errors[f"socket {kind}"] += count
    return dict(errors.most_common())


def summarise(
    args: argparse.Namespace, code: Path, out: Path, wrk: WrkRun, measure: Measurement, sampler: PgSampler
) -> dict[str, Any]:
    idle_before, idle_after, steady_from, steady_to = measure.snapshots
    idle, steady = Window.between(idle_before, idle_after), Window.between(steady_from, steady_to)
    in_window = [a for a in wrk.answers if steady_from.t <= a.finished <= steady_to.t]
    good = [a.latency for a in in_window if a.kind == "-" and a.status == 200 and a.latency is not None]
    calls = max(1, len(good))
    cpu = steady.cpu_by_group()
    workers = sorted(k for k in steady.cpu if k.startswith("worker"))
    lat = wrk.summary["latency_us"]
    stack_ms = sum(v for k, v in cpu.items() if k != "harness") * 1000 / calls
    (out / "activity.csv").write_text(
        "t,idle_in_txn,active,idle,max_xact_age_ms\n"
        + "".join(
            f"{x.t - wrk.started:.2f},{x.idle_in_txn},{x.active},{x.idle},{x.max_xact_age_ms}\n"
            for x in sampler.samples
        )
    )
    return {
        "label": args.label,
        "code": str(code),
        "commit": commit_of(code),
        "users": args.users,
        "tool": args.tool,
        "sleep_s": args.sleep,
        "ramp_s": args.ramp,
        "workers": args.workers,
        "pgbouncer": args.pgbouncer,
        "duration_s": args.duration,
        "window_s": round(steady.seconds, 1),
        "calls_per_s": round(len(good) / steady.seconds, 1),
        "completed_in_window": len(good),
        "completed": sum(1 for a in wrk.answers if a.kind == "-" and a.status == 200),
        "p50_s": round(percentile(good, 50), 4),
        "p90_s": round(percentile(good, 90), 4),
        "p99_s": round(percentile(good, 99), 4),
        "max_s": round(max(good, default=math.nan), 4),
        # The machine is shared: what the stack's processes cost per call caps what 2 cores could
        # serve if nothing else ran (CPU-bound, and contention inflates the cost: a lower bound).
        "calls_per_s_on_idle_machine": round(2000 / max(1e-9, stack_ms), 1),
        "job_phases_s": measure.phases,
        "backend_clock": measure.backend_clock,
        "wrk_latency_all_answers_s": {k: round(v / 1e6, 4) for k, v in lat.items()},
        "errors": errors_by_kind(wrk.answers, wrk.summary),
        "error_samples": wrk.details,
        # wrk builds one request more than it sends, to check the script's output parses.
        "unanswered_at_end": wrk.summary["sent"] - 1 - wrk.summary["answered"],
        "cpu_ms_per_call": {
            "gateway": round((cpu.get("api", 0) + cpu.get("workers", 0)) * 1000 / calls, 2),
            **{k: round(v * 1000 / calls, 2) for k, v in sorted(cpu.items())},
            **{k: round(steady.cpu[k] * 1000 / calls, 2) for k in workers},
        },
        "cpu_percent_of_one_core": {
            **{k: round(v * 100 / steady.seconds, 1) for k, v in sorted(cpu.items())},
            "machine_busy": round(steady.machine_busy * 100 / steady.seconds, 1),
            "machine_capacity": round(steady.machine_total * 100 / steady.seconds, 1),
            "other_processes": round((steady.machine_busy - sum(cpu.values())) * 100 / steady.seconds, 1),
        },
        "idle_cpu_percent_of_one_core": {
            k: round(v * 100 / idle.seconds, 2) for k, v in sorted(idle.cpu_by_group().items())
        },
        "redis": {
            "commands_per_call": round(steady.commands.total() / calls, 2),
            "round_trips_per_call": round(steady.redis_reads / calls, 2),
            "top_commands_per_call": {k: round(v / calls, 2) for k, v in steady.commands.most_common(14)},
            "idle_commands_per_s": round(idle.commands.total() / idle.seconds, 1),
        },
        "max_idle_in_txn": max((x.idle_in_txn for x in sampler.samples), default=0),
        "max_xact_age_ms": max((x.max_xact_age_ms for x in sampler.samples), default=0.0),
        "peak_rss_mb": dict(sampler.peak_rss_mb),
        "log_errors": wrk.log_errors,
    }


def pgbouncer_errors(log_path: Path) -> dict[str, int]:
    """PgBouncer's complaints: clients cut by idle_transaction_timeout, server errors."""
    text = log_path.read_text()
    return {
        "pgbouncer idle transaction timeout": text.count("idle transaction timeout"),
        "pgbouncer ERROR": text.count(" ERROR "),
    }


def commit_of(code: Path) -> str:
    """The checkout's commit, or its directory's name for an export (bench/compare.sh names it so)."""
    result = subprocess.run(
        ["git", "-C", str(code), "describe", "--always", "--dirty"], capture_output=True, text=True
    )
    return result.stdout.strip() if result.returncode == 0 else code.resolve().name


def log_errors(log_dir: Path) -> dict[str, int]:
    found: Counter[str] = Counter()
    for path in log_dir.glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            match = LOG_ERRORS.search(line)
            if match:
                found[f"{path.stem}: {match.group(0)}"] += 1
    return dict(found)


def fmt(value: float) -> str:
    return "-" if isinstance(value, float) and math.isnan(value) else f"{value:g}"


def table(summaries: list[dict[str, Any]]) -> list[str]:
    """One row per run: the figures to compare side by side."""
    lines = [
        "| run | commit | users x tool | calls/s | p50 s | p99 s | errors | gateway CPU ms/call "
        "(API + workers) | backend | Redis | PostgreSQL | wrk | calls/s the stack's CPU would allow "
        "on 2 idle cores | Redis cmds/call | round trips/call | max idle in txn | other processes, "
        "% of a core |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in summaries:
        cpu = x["cpu_ms_per_call"]
        lines.append(
            f"| {x['label']} | {x['commit']} | {x['users']} x {x['tool']}({x['sleep_s']:g} s) "
            f"| {x['calls_per_s']} | {fmt(x['p50_s'])} | {fmt(x['p99_s'])} | {sum(x['errors'].values())} "
            f"| {cpu['gateway']} ({cpu.get('api', 0)} + {cpu.get('workers', 0)}) | {cpu.get('backend', 0)} "
            f"| {cpu.get('redis', 0)} | {cpu.get('postgres', 0)} | {cpu.get('wrk', 0)} "
            f"| {x['calls_per_s_on_idle_machine']} "
            f"| {x['redis']['commands_per_call']} | {x['redis']['round_trips_per_call']} "
            f"| {x['max_idle_in_txn']} | {x['cpu_percent_of_one_core']['other_processes']} |"
        )
    return lines


def details(x: dict[str, Any]) -> list[str]:
    workers = {k: v for k, v in x["cpu_ms_per_call"].items() if k.startswith("worker") and k != "workers"}
    lines = [
        f"## {x['label']} ({x['commit']}, {x['code']})",
        "",
        f"- {x['users']} users (wrk connections), tool `{x['tool']}` sleeping {x['sleep_s']:g} s, "
        f"{x['workers']} workers, {x['duration_s']:g} s of load, "
        + (
            f"first calls started over {x['ramp_s']:g} s; "
            if x.get("ramp_s")
            else "all users starting at once; "
        )
        + f"steady window {x['window_s']} s: "
        f"{x['completed_in_window']} calls completed in it ({x['completed']} in the whole run).",
        f"- latency of completed calls in the window: p50 {fmt(x['p50_s'])} s, p90 {fmt(x['p90_s'])} s, "
        f"p99 {fmt(x['p99_s'])} s, max {fmt(x['max_s'])} s; wrk's histogram of all answers over the "
        f"whole run: {x['wrk_latency_all_answers_s']}",
        f"- the newest completed jobs at the window's end, from their records (s): {x.get('job_phases_s')} "
        "(queued: enqueued to claimed; running: claimed to finished; the rest of a call's latency is "
        "the API's)",
        *backend_clock_line(x.get("backend_clock") or {}),
        f"- errors over the whole run: {x['errors'] or 'none'}; requests unanswered when wrk stopped "
        f"(in flight): {x['unanswered_at_end']}",
        *(f"  - `{key}`: `{body[:300]}`" for key, body in x["error_samples"].items()),
        f"- CPU ms per completed call: {x['cpu_ms_per_call']}; per worker: {workers}",
        f"- CPU, % of one core over the window: {x['cpu_percent_of_one_core']} (other_processes: "
        "everything else on this shared machine)",
        f"- idle before the load, % of one core: {x['idle_cpu_percent_of_one_core']}; Redis "
        f"{x['redis']['idle_commands_per_s']} commands/s",
        f"- Redis per call: {x['redis']['commands_per_call']} commands (those inside scripts and "
        f"MULTI included), {x['redis']['round_trips_per_call']} round trips (read events); top: "
        f"{x['redis']['top_commands_per_call']}",
        f"- PostgreSQL: max idle-in-transaction sessions {x['max_idle_in_txn']}, max transaction age "
        f"{x['max_xact_age_ms']} ms; peak RSS MB: {x['peak_rss_mb']}",
        f"- log lines matching {LOG_ERRORS.pattern!r}: {x['log_errors'] or 'none'}",
        "",
    ]
    return lines


def backend_clock_line(clock: dict[str, Any]) -> list[str]:
    """The backend's own share of a slow call, from bench/backend.py's clock (none for echo)."""
    if "error" in clock:
        return [f"- the backend's own time in the tool: unknown, its clock was {clock['error']}"]
    if not clock.get("calls"):
        return []
    return [
        f"- the backend's own time in the tool, entry to answer, for the {clock['calls']} calls that "
        f"ended in the window: p50 {fmt(clock['tool_p50_s'])} s, p90 {fmt(clock['tool_p90_s'])} s; "
        f"its sleeps overshot by p50 {fmt(clock['step_overshoot_p50_ms'])}, p90 "
        f"{fmt(clock['step_overshoot_p90_ms'])}, p99 {fmt(clock['step_overshoot_p99_ms'])} ms per "
        "step (its own event loop's lag; the rest of a call's latency is the gateway's)"
    ]


def write_report(summaries: list[dict[str, Any]], out: Path) -> None:
    (out / "summary.json").write_text(json.dumps(summaries, indent=2))
    lines = [
        f"# Load run {out.name}",
        "",
        f"Command: `python bench/load.py {' '.join(sys.argv[1:])}`",
        "",
        "Driven by wrk (bench/wrk_call.lua, every answer checked); figures over the steady window; "
        "CPU from /proc utime+stime deltas divided by the calls completed in the window; Redis "
        "private to each run; `idle_in_transaction_session_timeout = 1s` on the bench database."
        + (
            " The API reaches PostgreSQL through a private PgBouncer (`pool_mode = transaction`, "
            "`idle_transaction_timeout = 1`, 4 server connections; MCPQ_DB_PGBOUNCER=true)."
            if any(x["pgbouncer"] for x in summaries)
            else ""
        ),
        "",
        *table(summaries),
        "",
        *(line for x in summaries for line in details(x)),
    ]
    (out / "report.md").write_text("\n".join(lines))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), help="defaults for the options below")
    parser.add_argument("--users", type=int, default=100, help="wrk connections, one call at a time each")
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds the tool sleeps (0: echo)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--ramp",
        type=float,
        default=0.0,
        help="start each user's first call at a random moment in this many seconds (default 0: all at once)",
    )
    parser.add_argument(
        "--warmup", type=float, help="seconds before the steady window (default: ramp + sleep + 5)"
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--call-wait", type=float, default=300.0, help="each call's timeout_s")
    parser.add_argument("--idle", type=float, default=2.0, help="seconds of idle measured before the load")
    parser.add_argument("--worker-max-jobs", type=int, default=0, help="default: users / workers + 10%%")
    parser.add_argument("--db-pool", type=int, default=5)
    parser.add_argument("--backend-stateless", action="store_true", help="JSON bodies, no progress stream")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the API and workers")
    parser.add_argument(
        "--pgbouncer", action="store_true", help="API to PostgreSQL through PgBouncer, transaction mode"
    )
    parser.add_argument(
        "--code", type=Path, action="append", help="a checkout to run the API and workers from (repeatable)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="run the --code list this many times")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    known, _ = parser.parse_known_args()
    if known.shape:
        parser.set_defaults(**SHAPES[known.shape])
    args = parser.parse_args()
    args.tool = "echo" if args.sleep == 0 else "sleep"
    if args.warmup is None:
        args.warmup = min(args.ramp + args.sleep + 5, args.duration / 3)
    if args.ramp > args.sleep:
        # Past one call's length, a user's second call could fall inside the ramp and wait too.
        parser.error("--ramp must not be longer than --sleep")
    if args.duration - args.warmup < 5:
        parser.error("--duration must leave at least 5 s after --warmup")
    return args


def main() -> None:
    args = parse_args()
    raise_open_files_limit()
    out = args.out / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    summaries = []
    # Rounds alternate the checkouts (A B A B), so a drift of the shared machine hits both.
    for i, code in enumerate((args.code or [ROOT]) * args.rounds):
        args.label = f"run{i + 1}"
        summaries.append(run_once(args, code, out / "raw" / args.label))
        print("\n".join(table(summaries)[-1:]), flush=True)
    write_report(summaries, out)
    print("\n".join(table(summaries)))
    print(f"report: {out / 'report.md'}")


if __name__ == "__main__":
    main()
