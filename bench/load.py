"""Load benchmark: thousands of concurrent slow MCP calls, with PostgreSQL made strict.

It starts (or targets) a backend MCP server whose tool sleeps --sleep seconds, the API and
--workers worker processes; registers the backend; then --users virtual users call the tool in
a loop for --duration seconds (POST /call, or --mode jobs: POST /jobs then GET ?wait=).
PostgreSQL is strict for the run: idle_in_transaction_session_timeout = 1s on the bench
database, so any session held across a slow call is killed and shows up as an error.

Every --sample-interval seconds a sampler records pg_stat_activity (sessions by state,
idle-in-transaction count, oldest transaction), the API's /metrics (pool checked out, queue
depth), the driver's in-flight, completed and error counts, and the RSS and CPU of every
process. The run ends with bench/results/<timestamp>/: report.md, samples.csv, plot.png.

    python bench/load.py                                  # the seed: 4000 users, 10 s, 15 min
    python bench/load.py --users 500 --duration 60        # a quick run
    python bench/load.py --sleep 0 --levels 1,50,500 --duration 30   # throughput vs direct

With --api URL --token T --backend-url U it drives a running gateway instead (then process RSS,
logs and the database setting are up to you: pass --database-url to sample pg_stat_activity).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import itertools
import json
import math
import multiprocessing
import os
import re
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import httpx2
import psutil
import psycopg
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._harness import ROOT, Stack, libpq, stack

# The sampler runs in a process started fresh (not forked from a running event loop).
MP = multiprocessing.get_context("spawn")
LOG_ERRORS = re.compile(r"ProtocolViolation|terminating connection|idle-in-transaction|idle_in_transaction")


class Driver:
    """The virtual users' tallies. In-flight, completed and error counts live in shared memory,
    so that the sampler, a process of its own, reads them without waiting on the driver's loop."""

    def __init__(self) -> None:
        self.shared = MP.Array("q", 3, lock=False)  # in flight, completed, errors
        self.errors: Counter[str] = Counter()
        self.latencies: list[tuple[float, float]] = []  # (finished at, seconds)

    @property
    def in_flight(self) -> int:
        return int(self.shared[0])

    @in_flight.setter
    def in_flight(self, value: int) -> None:
        self.shared[0] = value

    @property
    def completed(self) -> int:
        return int(self.shared[1])

    @completed.setter
    def completed(self, value: int) -> None:
        self.shared[1] = value

    def error(self, kind: str) -> None:
        self.errors[kind] += 1
        self.shared[2] += 1


@dataclass
class Sample:
    t: float
    in_flight: int
    completed: int
    errors: int
    idle_in_txn: int
    active: int
    idle: int
    max_xact_age_ms: float
    pool_checked_out: float
    queue_depth: float
    waiting_requests: float
    rss_api_mb: float
    rss_workers_mb: float
    rss_backend_mb: float
    cpu_api: float
    cpu_workers: float
    cpu_backend: float
    cpu_driver: float
    cpu_machine: float


async def user_loop(
    api: httpx.AsyncClient, ref: str, args: argparse.Namespace, stop_at: float, driver: Driver
) -> None:
    # Long enough that a saturated machine (calls queue behind each other) is not counted as errors.
    call_wait = max(300.0, args.sleep * 30)
    while time.monotonic() < stop_at:
        driver.in_flight += 1
        started = time.monotonic()
        try:
            ok = await (
                one_call(api, ref, args, call_wait, driver)
                if args.mode == "call"
                else one_job(api, ref, args, driver)
            )
        except httpx.HTTPError as exc:
            driver.error(f"transport:{type(exc).__name__}")
            ok = False
        finally:
            driver.in_flight -= 1
        if ok:
            driver.completed += 1
            driver.latencies.append((time.monotonic(), time.monotonic() - started))
        else:
            await asyncio.sleep(0.5)  # an error must not turn a user into a hot loop


async def one_call(
    api: httpx.AsyncClient, ref: str, args: argparse.Namespace, wait: float, driver: Driver
) -> bool:
    r = await api.post(
        f"/v1/tools/{ref}/call", json={"arguments": {"seconds": args.sleep}, "timeout_s": wait}
    )
    if r.status_code != 200:
        driver.error(f"http:{r.status_code}")
        return False
    if r.json()["result"]["content"][0]["text"] != "ok":
        driver.error("wrong-result")
        return False
    return True


async def one_job(api: httpx.AsyncClient, ref: str, args: argparse.Namespace, driver: Driver) -> bool:
    r = await api.post(f"/v1/tools/{ref}/jobs", json={"arguments": {"seconds": args.sleep}})
    if r.status_code != 202:
        driver.error(f"http:{r.status_code}")
        return False
    job_id = r.json()["job_id"]
    while True:
        got = await api.get(f"/v1/jobs/{job_id}", params={"wait": 60})
        if got.status_code != 200:
            driver.error(f"http:{got.status_code}")
            return False
        body = got.json()
        if body["status"] == "completed":
            return bool(body["result"]["content"][0]["text"] == "ok")
        if body["status"] in ("failed", "cancelled"):
            driver.error(f"job:{body.get('error', {}).get('type', body['status'])}")
            return False


@dataclass(frozen=True)
class SamplerConfig:
    api: str
    token: str
    database_url: str | None
    pids: dict[str, int]
    driver_pid: int
    interval: float
    t0: float  # time.monotonic() of the run's start (the clock is system-wide)
    out: Path


def run_sampler(config: SamplerConfig, shared: Any, stop: Any) -> None:
    """The sampler process: ticks every `interval` whatever the driver's loop is doing."""
    with contextlib.suppress(OSError):
        os.nice(-5)  # root may raise its priority: a sample late is a sample wrong
    samples = asyncio.run(Sampler(config, shared).run(stop))
    (config.out / "samples.json").write_text(json.dumps([asdict(x) for x in samples]))


class Sampler:
    def __init__(self, config: SamplerConfig, shared: Any) -> None:
        self.config = config
        self.shared = shared
        self.samples: list[Sample] = []
        self.procs = {name: psutil.Process(pid) for name, pid in config.pids.items()}
        self.driver_proc = psutil.Process(config.driver_pid)
        for proc in [*self.procs.values(), self.driver_proc]:
            proc.cpu_percent()  # prime
        psutil.cpu_percent()

    async def run(self, stop: Any) -> list[Sample]:
        conn = None
        if self.config.database_url:
            conn = await psycopg.AsyncConnection.connect(
                libpq(self.config.database_url), autocommit=True, application_name="mcpq-bench-sampler"
            )
        async with httpx.AsyncClient(
            base_url=self.config.api, headers={"Authorization": f"Bearer {self.config.token}"}
        ) as self.api:
            try:
                next_at = time.monotonic()
                while not stop.is_set():
                    self.samples.append(await self.one(conn, time.monotonic() - self.config.t0))
                    next_at += self.config.interval
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            finally:
                if conn is not None:
                    await conn.close()
        return self.samples

    async def one(self, conn: psycopg.AsyncConnection[Any] | None, t: float) -> Sample:
        states: dict[str, int] = {}
        max_age = 0.0
        if conn is not None:
            rows = await (
                await conn.execute(
                    "SELECT coalesce(state, '?'), count(*), "
                    "coalesce(max(extract(epoch FROM now() - xact_start)) * 1000, 0) "
                    "FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name LIKE 'mcpq%%' AND application_name <> 'mcpq-bench-sampler' "
                    "GROUP BY 1"
                )
            ).fetchall()
            for state, count, age in rows:
                states[state] = count
                max_age = max(max_age, float(age))
        scraped = await self.scrape()
        rss = {name: self.rss(name) for name in self.procs}
        cpu = {name: self.cpu(name) for name in self.procs}
        return Sample(
            t=round(t, 2),
            in_flight=int(self.shared[0]),
            completed=int(self.shared[1]),
            errors=int(self.shared[2]),
            idle_in_txn=states.get("idle in transaction", 0) + states.get("idle in transaction (aborted)", 0),
            active=states.get("active", 0),
            idle=states.get("idle", 0),
            max_xact_age_ms=round(max_age, 1),
            pool_checked_out=scraped.get("mcpq_db_pool_checked_out", math.nan),
            queue_depth=scraped.get("mcpq_queue_depth", math.nan),
            waiting_requests=scraped.get("mcpq_api_waiting_requests", math.nan),
            rss_api_mb=rss.get("api", 0.0),
            rss_workers_mb=sum(v for k, v in rss.items() if k.startswith("worker")),
            rss_backend_mb=rss.get("backend", 0.0),
            cpu_api=cpu.get("api", 0.0),
            cpu_workers=sum(v for k, v in cpu.items() if k.startswith("worker")),
            cpu_backend=cpu.get("backend", 0.0),
            cpu_driver=round(self.driver_proc.cpu_percent(), 1),
            cpu_machine=round(psutil.cpu_percent() * psutil.cpu_count(), 1),
        )

    async def scrape(self) -> dict[str, float]:
        try:
            r = await self.api.get("/metrics", timeout=5)
        except httpx.HTTPError:
            return {}
        return {
            s.name: s.value
            for fam in text_string_to_metric_families(r.text)
            for s in fam.samples
            if not s.labels
        }

    def rss(self, name: str) -> float:
        with contextlib.suppress(psutil.Error):
            return round(self.procs[name].memory_info().rss / 2**20, 1)
        return 0.0

    def cpu(self, name: str) -> float:
        with contextlib.suppress(psutil.Error):
            return round(self.procs[name].cpu_percent(), 1)
        return 0.0


def log_errors(log_dir: Path) -> Counter[str]:
    found: Counter[str] = Counter()
    for path in log_dir.glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            match = LOG_ERRORS.search(line)
            if match:
                found[f"{path.stem}: {match.group(0)}"] += 1
    return found


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def register(admin: httpx.AsyncClient, backend_url: str) -> tuple[str, str]:
    """A team, the backend as its gateway, and a member token: what the users call with."""
    team = f"load-{uuid.uuid4().hex[:6]}"
    (await admin.post("/v1/teams", json={"name": team})).raise_for_status()
    r = await admin.post(
        "/v1/gateways", json={"name": team, "url": backend_url, "timeout_s": 600, "team": team}
    )
    r.raise_for_status()
    minted = await admin.post("/v1/tokens", json={"name": "load", "team": team, "role": "member"})
    minted.raise_for_status()
    return f"{team}.sleep", str(minted.json()["token"])


# httpx's connection pool scans all its connections per request: with thousands in one pool the
# driver itself becomes the bottleneck. So users are spread over pools of this size.
USERS_PER_CLIENT = 50


async def drive(args: argparse.Namespace, s: Stack | None, out: Path) -> tuple[dict[str, Any], list[Sample]]:
    driver = Driver()
    base = s.api if s else args.api
    token = s.token if s else args.token
    timeout = httpx.Timeout(600, connect=60)
    async with contextlib.AsyncExitStack() as clients:
        api = await clients.enter_async_context(
            httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
        )
        ref, member_token = await register(api, s.backend_url if s else args.backend_url)
        limits = httpx.Limits(max_connections=USERS_PER_CLIENT, max_keepalive_connections=USERS_PER_CLIENT)
        pools = [
            await clients.enter_async_context(
                httpx.AsyncClient(
                    base_url=base,
                    headers={"Authorization": f"Bearer {member_token}"},
                    timeout=timeout,
                    limits=limits,
                )
            )
            for _ in range(math.ceil(args.users / USERS_PER_CLIENT))
        ]
        t0 = time.monotonic()
        config = SamplerConfig(
            api=base,
            token=token,
            database_url=s.database_url if s else args.database_url,
            pids={name: p.pid for name, p in s.procs.items()} if s else {},
            driver_pid=os.getpid(),
            interval=args.sample_interval,
            t0=t0,
            out=out,
        )
        stop_sampling = MP.Event()
        sampler = MP.Process(target=run_sampler, args=(config, driver.shared, stop_sampling), daemon=True)
        sampler.start()
        stop_at = t0 + args.ramp + args.duration
        users = []
        for i in range(args.users):  # a steady ramp, so the start is not one thundering herd
            pool = pools[i // USERS_PER_CLIENT]
            users.append(asyncio.create_task(user_loop(pool, ref, args, stop_at, driver)))
            if args.ramp and i % 50 == 49:
                await asyncio.sleep(args.ramp * 50 / args.users)
        await asyncio.gather(*users)
        elapsed = time.monotonic() - t0
        stop_sampling.set()
        await asyncio.to_thread(sampler.join, 30)
    handoff = out / "samples.json"  # the sampler process's output; samples.csv is the record
    samples = [Sample(**x) for x in json.loads(handoff.read_text())]
    handoff.unlink()
    return summarise(args, driver, samples, elapsed, t0, out, s), samples


def summarise(
    args: argparse.Namespace,
    driver: Driver,
    samples: list[Sample],
    elapsed: float,
    t0: float,
    out: Path,
    s: Stack | None,
) -> dict[str, Any]:
    # Steady state: from when every user first has a call in flight (and one call's time has
    # passed since the ramp) until users stop issuing calls.
    full = next((x.t for x in samples if x.in_flight >= args.users), args.ramp)
    steady_from = max(full, args.ramp + min(args.sleep + 5, args.duration / 3))
    stop = args.ramp + args.duration
    steady = [x for x in samples if steady_from <= x.t <= stop]
    steady_latencies = [lat for at, lat in driver.latencies if steady_from <= at - t0 <= stop]
    window = max(1e-9, stop - steady_from)
    logs = log_errors(out) if s is not None else Counter()
    return {
        "users": args.users,
        "sleep_s": args.sleep,
        "mode": args.mode,
        "workers": args.workers,
        "db_pool": args.db_pool,
        "elapsed_s": round(elapsed, 1),
        "completed": driver.completed,
        "errors": dict(driver.errors),
        "log_errors": dict(logs),
        "throughput_per_s": round(len(steady_latencies) / window, 1),
        "p50_s": round(percentile(steady_latencies, 50), 4),
        "p99_s": round(percentile(steady_latencies, 99), 4),
        "max_idle_in_txn": max((x.idle_in_txn for x in samples), default=0),
        "max_xact_age_ms": max((x.max_xact_age_ms for x in samples), default=0.0),
        "max_pool_checked_out": max((x.pool_checked_out for x in samples), default=0.0),
        "in_flight_max": max((x.in_flight for x in samples), default=0),
        "in_flight_steady_min": min((x.in_flight for x in steady), default=0),
        "in_flight_steady_mean": round(statistics.fmean(x.in_flight for x in steady), 1) if steady else 0,
        "peak_rss_api_mb": max((x.rss_api_mb for x in samples), default=0.0),
        "peak_rss_workers_mb": max((x.rss_workers_mb for x in samples), default=0.0),
        "peak_rss_backend_mb": max((x.rss_backend_mb for x in samples), default=0.0),
        "mean_cpu_percent": {
            "api": round(statistics.fmean(x.cpu_api for x in steady), 1) if steady else 0,
            "workers": round(statistics.fmean(x.cpu_workers for x in steady), 1) if steady else 0,
            "backend": round(statistics.fmean(x.cpu_backend for x in steady), 1) if steady else 0,
            "driver": round(statistics.fmean(x.cpu_driver for x in steady), 1) if steady else 0,
            "machine": round(statistics.fmean(x.cpu_machine for x in steady), 1) if steady else 0,
        },
        "samples": len(samples),
        "sample_interval_p99_s": round(
            percentile([b.t - a.t for a, b in itertools.pairwise(samples)], 99), 2
        ),
        "steady_from_s": round(steady_from, 1),
        "per_minute": per_minute(driver, t0),
    }


def per_minute(driver: Driver, t0: float) -> list[dict[str, float]]:
    """Calls finished and their p50 per minute: stability over time."""
    buckets: dict[int, list[float]] = {}
    for at, lat in driver.latencies:
        buckets.setdefault(int((at - t0) // 60), []).append(lat)
    return [
        {"minute": m, "calls": len(v), "p50_s": round(percentile(v, 50), 3)}
        for m, v in sorted(buckets.items())
    ]


def write_report(args: argparse.Namespace, summary: dict[str, Any], samples: list[Sample], out: Path) -> None:
    with (out / "samples.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(asdict(samples[0]).keys()) if samples else ["t"])
        writer.writeheader()
        for sample in samples:
            writer.writerow(asdict(sample))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(samples, out / "plot.png", summary)
    errors = sum(summary["errors"].values())
    minutes = summary["per_minute"]
    cpu = summary["mean_cpu_percent"]
    stability = (
        f"{min(m['calls'] for m in minutes[1:-1])}-{max(m['calls'] for m in minutes[1:-1])} calls/min, "
        f"p50 {min(m['p50_s'] for m in minutes[1:-1])}-{max(m['p50_s'] for m in minutes[1:-1])} s "
        "(full minutes)"
        if len(minutes) > 2
        else "run shorter than 3 minutes"
    )
    lines = [
        f"# Load run {out.name}",
        "",
        f"Command: `python bench/load.py {' '.join(sys.argv[1:])}`",
        "",
        f"{summary['users']} users, tool sleeps {summary['sleep_s']} s, mode `{summary['mode']}`, "
        f"{summary['workers']} worker processes, API DB pool {summary['db_pool']} (+0 overflow), "
        f"tool cache {args.tool_cache_ttl} s, "
        f"`idle_in_transaction_session_timeout = 1s` on the bench database, "
        f"{summary['elapsed_s']} s in all ({args.ramp} s ramp), sampled every {args.sample_interval} s "
        f"by a process of its own ({summary['samples']} samples, p99 gap "
        f"{summary['sample_interval_p99_s']} s). Steady state from {summary['steady_from_s']} s "
        "(every user has a call in flight) to the end of the load.",
        "",
        "| measure | this run |",
        "|---|---|",
        f"| idle-in-transaction connections (max over run) | {summary['max_idle_in_txn']} |",
        f"| max transaction age | {summary['max_xact_age_ms']} ms |",
        f"| ProtocolViolation / terminated sessions in logs | {sum(summary['log_errors'].values())} |",
        f"| errors (non-2xx, transport, wrong result) | {errors} {summary['errors'] or ''} |",
        f"| stability over time | {stability} |",
        f"| DB pool checked out (max) | {summary['max_pool_checked_out']} of {summary['db_pool']} |",
        f"| calls in flight | max {summary['in_flight_max']}, steady-state min "
        f"{summary['in_flight_steady_min']}, mean {summary['in_flight_steady_mean']} |",
        f"| completed calls | {summary['completed']} |",
        f"| throughput (steady state) | {summary['throughput_per_s']} calls/s |",
        f"| latency p50 / p99 (steady state) | {summary['p50_s']} s / {summary['p99_s']} s |",
        f"| peak RSS: API / workers (sum) / backend | {summary['peak_rss_api_mb']} / "
        f"{summary['peak_rss_workers_mb']} / {summary['peak_rss_backend_mb']} MB |",
        f"| mean CPU (steady), % of one core: API / workers / backend / load driver / whole machine "
        f"(of {psutil.cpu_count() * 100}) | {cpu['api']} / {cpu['workers']} / {cpu['backend']} / "
        f"{cpu['driver']} / {cpu['machine']} |",
        "",
        "![over time](plot.png)",
        "",
        "Per minute:",
        "",
        "| minute | calls finished | p50 s |",
        "|---:|---:|---:|",
        *(f"| {m['minute']} | {m['calls']} | {m['p50_s']} |" for m in minutes),
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))


def plot(samples: list[Sample], path: Path, summary: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [x.t for x in samples]
    fig, axes = plt.subplots(4, 1, figsize=(10, 10), sharex=True)
    series = [
        ("calls in flight", [x.in_flight for x in samples], "tab:blue"),
        ("idle-in-transaction sessions", [x.idle_in_txn for x in samples], "tab:red"),
        ("max transaction age (ms)", [x.max_xact_age_ms for x in samples], "tab:orange"),
        ("errors (cumulative)", [x.errors for x in samples], "tab:purple"),
    ]
    for ax, (label, values, colour) in zip(axes, series, strict=True):
        ax.plot(t, values, color=colour)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("seconds")
    fig.suptitle(
        f"{summary['users']} users, sleep {summary['sleep_s']} s, {summary['workers']} workers, "
        f"pool {summary['db_pool']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


async def direct_level(url: str, users: int, duration: float, sleep: float) -> dict[str, float]:
    """The ceiling: the same calls straight to the backend on reused MCP SDK sessions."""
    latencies: list[float] = []
    sessions = min(users, 50)
    async with contextlib.AsyncExitStack() as stack_:
        http = await stack_.enter_async_context(
            httpx2.AsyncClient(limits=httpx2.Limits(max_connections=1000))
        )
        clients = [
            await stack_.enter_async_context(
                Client(streamable_http_client(url, http_client=http), cache=None)
            )
            for _ in range(sessions)
        ]
        stop_at = time.monotonic() + duration

        async def user(i: int) -> None:
            client = clients[i % sessions]
            while time.monotonic() < stop_at:
                started = time.monotonic()
                await client.call_tool("sleep", {"seconds": sleep})
                latencies.append(time.monotonic() - started)

        await asyncio.gather(*(user(i) for i in range(users)))
    return {
        "calls_per_s": round(len(latencies) / duration, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
    }


async def levels(args: argparse.Namespace, s: Stack, out: Path) -> None:
    rows = []
    for users in [int(x) for x in args.levels.split(",")]:
        level_args = argparse.Namespace(**{**vars(args), "users": users, "ramp": 0})
        summary, _ = await drive(level_args, s, out)
        ceiling = await direct_level(s.backend_url, users, args.duration, args.sleep)
        gw = {
            "calls_per_s": summary["throughput_per_s"],
            "p50_ms": round(summary["p50_s"] * 1000, 2),
            "p99_ms": round(summary["p99_s"] * 1000, 2),
            "errors": sum(summary["errors"].values()),
        }
        rows.append((users, gw, ceiling))
        print(users, gw, ceiling, flush=True)
    lines = [
        f"# Throughput at --sleep {args.sleep}: mcpq vs. direct (run {out.name})",
        "",
        f"Command: `python bench/load.py {' '.join(sys.argv[1:])}`",
        "",
        f"Each level runs {args.duration} s through mcpq (`POST /call`, {args.workers} workers), then "
        f"{args.duration} s straight to the backend with the MCP SDK on reused sessions (the ceiling), "
        "in the same run on the same machine.",
        "",
        "| users | mcpq calls/s | direct calls/s | ratio | mcpq p50 ms | direct p50 ms | mcpq p99 ms | "
        "direct p99 ms | mcpq errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for users, gw, ceiling in rows:
        ratio = gw["calls_per_s"] / ceiling["calls_per_s"] if ceiling["calls_per_s"] else math.nan
        lines.append(
            f"| {users} | {gw['calls_per_s']} | {ceiling['calls_per_s']} | {ratio:.2f} | {gw['p50_ms']} | "
            f"{ceiling['p50_ms']} | {gw['p99_ms']} | {ceiling['p99_ms']} | {gw['errors']} |"
        )
    (out / "report.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--sleep", type=float, default=10.0, help="seconds the backend tool sleeps")
    parser.add_argument("--duration", type=float, default=900.0, help="seconds of load after the ramp")
    parser.add_argument("--ramp", type=float, default=20.0, help="seconds to start all users")
    parser.add_argument("--mode", choices=["call", "jobs"], default="call")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--worker-max-jobs", type=int, default=0, help="default: users / workers + 10%%")
    parser.add_argument("--db-pool", type=int, default=5)
    parser.add_argument(
        "--tool-cache-ttl",
        type=float,
        default=30.0,
        help="the gateway's MCPQ_TOOL_CACHE_TTL_S (default: the product default); 0 makes every call "
        "resolve its tool in a short DB session",
    )
    parser.add_argument("--sample-interval", type=float, default=0.5)
    parser.add_argument("--levels", default="", help="e.g. 1,50,500: throughput per level vs direct")
    parser.add_argument("--api", help="target a running gateway instead of starting one")
    parser.add_argument("--token", help="with --api: its admin token")
    parser.add_argument("--backend-url", help="with --api: a backend whose `sleep` tool to call")
    parser.add_argument("--database-url", help="with --api: the gateway's DB, to sample pg_stat_activity")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    out = args.out / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    if args.api:
        summary, samples = asyncio.run(drive(args, None, out))
        write_report(args, summary, samples, out)
        print(json.dumps(summary, indent=2))
        return
    per_worker = args.worker_max_jobs or math.ceil(args.users * 1.1 / args.workers) + 10
    env = {
        "MCPQ_DB_POOL_SIZE": str(args.db_pool),
        "MCPQ_DB_MAX_OVERFLOW": "0",
        "MCPQ_TOOL_CACHE_TTL_S": str(args.tool_cache_ttl),
        "MCPQ_WORKER_MAX_JOBS": str(per_worker),
        "MCPQ_MAX_WAIT_S": "600",
        # All users are one team here; its in-flight cap must admit them all.
        "MCPQ_TEAM_MAX_IN_FLIGHT": str(args.users * 2),
    }
    with stack(
        workers=args.workers,
        extra_env=env,
        log_dir=out,
        db_settings={"idle_in_transaction_session_timeout": "1s"},
        backend_args=("--stateless",),
        api_args=("--backlog", "8192", "--timeout-keep-alive", "120"),
    ) as s:
        if args.levels:
            asyncio.run(levels(args, s, out))
        else:
            summary, samples = asyncio.run(drive(args, s, out))
    if not args.levels:
        write_report(args, summary, samples, out)
        print(json.dumps({k: v for k, v in summary.items() if k != "per_minute"}, indent=2))
    print(f"report: {out / 'report.md'}")


if __name__ == "__main__":
    main()
