"""Start a backend, the API and workers as real processes on loopback, for the benchmarks."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from cryptography.fernet import Fernet
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 30.0, procs: list[subprocess.Popen[bytes]] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs or []:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1):
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not come up within {timeout}s")


@dataclass
class Stack:
    api: str
    backend_url: str
    token: str
    database_url: str
    procs: dict[str, subprocess.Popen[bytes]]


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
) -> Iterator[Stack]:
    """Backend MCP server + API + N workers, each its own process, on a fresh database."""
    admin_url = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    token = secrets.token_urlsafe(16)
    run = uuid.uuid4().hex[:8]
    with bench_database(admin_url, db_settings) as database_url, contextlib.ExitStack() as stop:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "MCPQ_ADMIN_TOKEN": token,
            "MCPQ_SECRET_KEYS": Fernet.generate_key().decode(),
            # The benchmark's backend listens on loopback, and nothing else is ever contacted.
            "MCPQ_ALLOWED_BACKEND_NETWORKS": "127.0.0.1/32",
            "MCPQ_KEY_PREFIX": f"mcpq-bench-{run}",
            "MCPQ_QUEUE_NAME": f"mcpq-bench-{run}:queue",
            "PYTHONPATH": str(ROOT),
            "MCPQ_WORKER_METRICS_PORT": "0",
            **(extra_env or {}),
        }
        procs: dict[str, subprocess.Popen[bytes]] = {}

        def spawn(name: str, args: list[str]) -> subprocess.Popen[bytes]:
            out = open(log_dir / f"{name}.log", "wb") if log_dir else subprocess.DEVNULL
            proc = subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT, stdout=out, stderr=out)
            procs[name] = proc

            def kill() -> None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()

            stop.callback(kill)
            return proc

        backend_port, api_port = free_port(), free_port()
        spawn("backend", [str(ROOT / "bench" / "backend.py"), str(backend_port), *backend_args])
        spawn(
            "api",
            [
                "-m",
                "uvicorn",
                "api.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(api_port),
                "--log-level",
                "warning",
                "--no-access-log",
                *api_args,
            ],
        )
        for i in range(workers):
            spawn(f"worker{i}", ["-m", "workers"])
        api = f"http://127.0.0.1:{api_port}"
        wait_http(f"{api}/ready", procs=list(procs.values()))
        yield Stack(
            api=api,
            backend_url=f"http://127.0.0.1:{backend_port}/mcp",
            token=token,
            database_url=database_url,
            procs=procs,
        )
