"""Start a backend, the API and workers as real processes on loopback, for the benchmarks.

The API and workers run from `code` (this checkout by default, or another one, such as a
`git worktree` of an earlier commit, to compare two commits with the same benchmark). The
backend always runs from this checkout, so both sides of a comparison call the same server.
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psycopg
import redis
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

from deploy.pgbouncer import PgBouncer, running_pgbouncer

ROOT = Path(__file__).resolve().parent.parent
BACKEND = ROOT / "bench" / "backend.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def raise_open_files_limit() -> int:
    """Thousands of connections need thousands of descriptors: lift the soft limit to the hard one.
    Children (wrk, the API, workers) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def wait_http(url: str, timeout: float = 30.0, procs: list[subprocess.Popen[bytes]] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs or []:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1):
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not come up within {timeout}s")


def wait_port(port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def worker_args(code: Path) -> list[str]:
    """How a checkout starts a worker: its own entry point where it has one, else arq's CLI."""
    if (code / "workers" / "__main__.py").exists():
        return ["-m", "workers"]
    return ["-m", "arq", "workers.main.WorkerSettings"]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process (all its threads) so far, from /proc; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: count fields from the closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Processes:
    """Named child processes, each logging to its own file; stopped in reverse start order."""

    def __init__(self, env: dict[str, str], cwd: Path, log_dir: Path | None) -> None:
        self.env = env
        self.cwd = cwd
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.args: dict[str, list[str]] = {}
        self.logs: list[IO[bytes]] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_dir:
            log = open(self.log_dir / f"{name}.log", "ab")  # appends across restarts
            self.logs.append(log)
            out = log
        proc = subprocess.Popen([sys.executable, *args], env=self.env, cwd=self.cwd, stdout=out, stderr=out)
        self.procs[name] = proc
        self.args[name] = args
        return proc

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        return self.start(name, self.args[name])

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        proc = self.procs[name]
        proc.send_signal(sig)
        proc.wait(30)

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def stop_all(self) -> None:
        for proc in reversed(self.procs.values()):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs.values()):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for log in self.logs:
            log.close()


@dataclass
class RedisServer:
    """A private redis-server on its own port and directory: never the shared one."""

    data_dir: Path
    appendonly: bool
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    started: bool = False  # once clients know the port, a restart must keep it

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, attempts: int = 5) -> None:
        """Start (or restart, on the same port and data) and wait until it answers PING."""
        for _ in range(attempts):
            log = open(self.data_dir / "redis.log", "ab")
            self.proc = subprocess.Popen(
                [
                    "redis-server",
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--dir", str(self.data_dir),
                    "--save", "",
                    "--appendonly", "yes" if self.appendonly else "no",
                    "--maxclients", "20000",
                ],
                stdout=log,
                stderr=log,
            )  # fmt: skip
            log.close()
            if self._wait_ready():
                self.started = True
                return
            # A port from free_port() can be taken before the server binds it: try another,
            # unless this is a restart.
            if self.proc.poll() is not None and not self.started:
                self.port = free_port()
        raise RuntimeError(f"redis-server did not start; see {self.data_dir / 'redis.log'}")

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        assert self.proc is not None
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and self.proc.poll() is None:
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return True
                time.sleep(0.05)
            return False
        finally:
            client.close()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """SIGTERM: a clean shutdown (the AOF is flushed); SIGKILL: a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)


@contextlib.contextmanager
def private_redis(*, appendonly: bool = False) -> Iterator[RedisServer]:
    data_dir = Path(tempfile.mkdtemp(prefix="mcpq-bench-redis-"))
    server = RedisServer(data_dir=data_dir, appendonly=appendonly)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@dataclass
class Stack:
    api: str
    backend_url: str
    token: str
    database_url: str
    redis_url: str
    processes: Processes
    # The private PgBouncer the API reaches PostgreSQL through (stack(pgbouncer=True)).
    pgbouncer: PgBouncer | None = None

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        return self.processes.procs


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def bench_database(admin_url: str, settings: dict[str, str] | None = None) -> Iterator[str]:
    """A fresh database, with per-database settings (ALTER DATABASE ... SET) applied."""
    name = f"mcpq_bench_{uuid.uuid4().hex[:8]}"
    admin = libpq(admin_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        for key, value in (settings or {}).items():
            conn.execute(f"ALTER DATABASE \"{name}\" SET {key} = '{value}'")
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def stack(
    *,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    log_dir: Path | None = None,
    db_settings: dict[str, str] | None = None,
    backend_args: tuple[str, ...] = (),
    api_args: tuple[str, ...] = (),
    code: Path = ROOT,
    redis_url: str | None = None,
    pgbouncer: bool = False,
) -> Iterator[Stack]:
    """Backend MCP server + API + N workers, each its own process, on a fresh database.

    pgbouncer: the API reaches the database through a private PgBouncer in transaction pooling
    mode (idle_transaction_timeout = 1), with MCPQ_DB_PGBOUNCER=true. Stack.database_url stays
    the direct one, for the sampler."""
    admin_url = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    redis_url = redis_url or os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    token = secrets.token_urlsafe(16)
    run = uuid.uuid4().hex[:8]
    code = code.resolve()
    with (
        bench_database(admin_url, db_settings) as database_url,
        running_pgbouncer(database_url) if pgbouncer else contextlib.nullcontext() as proxy,
    ):
        env = {
            **os.environ,
            "DATABASE_URL": proxy.url(database_url) if proxy else database_url,
            **({"MCPQ_DB_PGBOUNCER": "true"} if proxy else {}),
            "REDIS_URL": redis_url,
            "MCPQ_ADMIN_TOKEN": token,
            "MCPQ_SECRET_KEYS": Fernet.generate_key().decode(),
            # The benchmark's backend listens on loopback, and nothing else is ever contacted.
            "MCPQ_ALLOWED_BACKEND_NETWORKS": "127.0.0.1/32",
            "MCPQ_KEY_PREFIX": f"mcpq-bench-{run}",
            "MCPQ_QUEUE_NAME": f"mcpq-bench-{run}:queue",
            # The checkout under test comes first on the path (before any editable install).
            "PYTHONPATH": str(code),
            "MCPQ_WORKER_METRICS_PORT": "0",
            **(extra_env or {}),
        }
        processes = Processes(env, code, log_dir)
        try:
            backend_port, api_port = free_port(), free_port()
            backend = processes.start("backend", [str(BACKEND), str(backend_port), *backend_args])
            processes.start(
                "api",
                [
                    "-m", "uvicorn", "api.main:app",
                    "--host", "127.0.0.1",
                    "--port", str(api_port),
                    "--log-level", "warning",
                    "--no-access-log",
                    # As in production (Dockerfile, compose, k8s): see bench/keepalive.py.
                    "--timeout-keep-alive", "75",
                    *api_args,
                ],
            )  # fmt: skip
            for i in range(workers):
                processes.start(f"worker{i}", worker_args(code))
            api = f"http://127.0.0.1:{api_port}"
            wait_port(backend_port, proc=backend)
            wait_http(f"{api}/ready", procs=list(processes.procs.values()))
            yield Stack(
                api=api,
                backend_url=f"http://127.0.0.1:{backend_port}/mcp",
                token=token,
                database_url=database_url,
                redis_url=redis_url,
                processes=processes,
                pgbouncer=proxy,
            )
        finally:
            processes.stop_all()
