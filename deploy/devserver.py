"""`python -m deploy.devserver` (what `make run` runs): the API and one worker, on any machine.

Whatever DATABASE_URL / REDIS_URL / MCPQ_ADMIN_TOKEN / MCPQ_SECRET_KEYS /
MCPQ_ALLOWED_BACKEND_NETWORKS leave unset is provided here:
- PostgreSQL: embedded, its cluster kept in ./.mcpq-data/pg (database `mcpq`).
- Redis: an embedded Valkey on a free port, persisted (AOF) in ./.mcpq-data/valkey: queued jobs
  and results survive a restart.
- Admin token: generated once, kept in ./.mcpq-data/admin-token.
- Secret key (encrypts backend headers): generated once, kept in ./.mcpq-data/secret-key.
- Backend allowlist: loopback (127.0.0.0/8, ::1), so backends on this machine can be registered.
Then it runs uvicorn, one worker (`python -m workers`) and the demo MCP backend (deploy/demo_backend.py, on
127.0.0.1:MCPQ_DEMO_PORT, default 9000; 0 leaves it off) as child processes and stops everything
when one exits or on Ctrl-C / SIGTERM. It first checks that its ports are free: a second
`make run` would otherwise find the first one answering and report it as its own.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from cryptography.fernet import Fernet

from deploy.embedded import EmbeddedPostgres, EmbeddedRedis

DATA_DIR = Path(".mcpq-data")
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
SAMPLE_PATH = "/v1/gateways"  # shown in the sample curl command
DEV_ALLOWED_NETWORKS = "127.0.0.0/8,::1/128"
DEMO_HOST = "127.0.0.1"
DEFAULT_DEMO_PORT = 9000


def port_in_use(host: str, port: int) -> bool:
    """True if something already listens on host:port (binding it as uvicorn would fails)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As uvicorn does: a port left in TIME_WAIT by a stopped server counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def refuse_busy_ports(ports: dict[str, tuple[str, int]]) -> None:
    """Exit with a clear message if a port we need is taken (e.g. by another `make run`)."""
    busy = [f"{what} port {host}:{port}" for what, (host, port) in ports.items() if port_in_use(host, port)]
    if busy:
        raise SystemExit(
            f"devserver: {' and '.join(busy)} already in use; is another `make run` up? "
            "Stop it, or pick other ports with MCPQ_PORT / MCPQ_DEMO_PORT (0 leaves the demo off)."
        )


def stored_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret kept in `path` (readable by this user only), created on first use."""
    if path.exists():
        return path.read_text().strip()
    value = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def name(child: subprocess.Popen[bytes]) -> str:
    return str(child.args[2])  # type: ignore[index]  # [python, -m, <module>, ...]


def wait_ready(
    url: str, children: list[subprocess.Popen[bytes]], received: list[int], timeout: float
) -> bool:
    """True once url answers 200; False if a signal arrived first. Exits if a child dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if received:
            return False
        for child in children:
            if child.poll() is not None:
                raise SystemExit(f"devserver: {name(child)} exited with {child.returncode} during startup")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise SystemExit(f"devserver: {url} did not answer 200 within {timeout:.0f} s")


def stop_children(children: list[subprocess.Popen[bytes]], sig: int) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(sig)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"devserver: {name(child)} did not stop in time, killing it", file=sys.stderr)
            child.kill()
            child.wait()


def ready_message(base: str, env: dict[str, str], demo_port: int) -> str:
    token = env["MCPQ_ADMIN_TOKEN"]
    lines = [
        "",
        "mcpq is ready",
        f"  base URL:     {base}",
        f"  admin token:  {token}",
        f"  backends may be on: public addresses and {env['MCPQ_ALLOWED_BACKEND_NETWORKS']}",
        f"  try:          curl -H 'Authorization: Bearer {token}' {base}{SAMPLE_PATH}",
    ]
    if demo_port:
        lines.append(f"  demo backend: http://{DEMO_HOST}:{demo_port}/mcp (README: First session)")
    lines.append("Ctrl-C stops the API, the worker, the demo backend and the embedded servers.")
    return "\n".join(lines) + "\n"


def main() -> int:
    env = os.environ.copy()
    host = env.get("MCPQ_HOST", "127.0.0.1")
    port = env.get("MCPQ_PORT", "8000")
    demo_port = int(env.get("MCPQ_DEMO_PORT", str(DEFAULT_DEMO_PORT)))
    ports = {"API": (host, int(port))}
    if demo_port:
        ports["demo backend"] = (DEMO_HOST, demo_port)
    refuse_busy_ports(ports)
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    with ExitStack() as stack:
        if not env.get("DATABASE_URL"):
            print("devserver: starting embedded PostgreSQL in", DATA_DIR / "pg", flush=True)
            pg = stack.enter_context(EmbeddedPostgres(DATA_DIR / "pg"))
            env["DATABASE_URL"] = pg.create_database("mcpq")
        if not env.get("REDIS_URL"):
            print("devserver: starting embedded Valkey (Redis protocol) in", DATA_DIR / "valkey", flush=True)
            # Persistent (AOF): jobs accepted before a restart of `make run` still end.
            valkey = EmbeddedRedis(DATA_DIR / "valkey", persist=True)
            env["REDIS_URL"] = stack.enter_context(valkey).url()
        if not env.get("MCPQ_ADMIN_TOKEN"):
            env["MCPQ_ADMIN_TOKEN"] = stored_secret(
                DATA_DIR / "admin-token", lambda: secrets.token_urlsafe(32)
            )
        if not env.get("MCPQ_SECRET_KEYS"):
            env["MCPQ_SECRET_KEYS"] = stored_secret(
                DATA_DIR / "secret-key", lambda: Fernet.generate_key().decode()
            )
        env.setdefault("MCPQ_ALLOWED_BACKEND_NETWORKS", DEV_ALLOWED_NETWORKS)

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        # Own process groups: a terminal's Ctrl-C reaches only us, and we forward it once.
        spawn = [
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.main:app",
                "--host",
                host,
                "--port",
                port,
                "--timeout-keep-alive",
                "75",
            ],
            [sys.executable, "-m", "workers"],
        ]
        if demo_port:
            spawn.append([sys.executable, "-m", "deploy.demo_backend", str(demo_port)])
        children = [subprocess.Popen(cmd, env=env, process_group=0) for cmd in spawn]
        try:
            base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
            if not wait_ready(f"{base}/ready", children, received, READY_TIMEOUT_S):
                return 0
            print(ready_message(base, env, demo_port), flush=True)
            while not received:
                dead = [c for c in children if c.poll() is not None]
                if dead:
                    print(f"devserver: {name(dead[0])} exited with {dead[0].returncode}", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            return 0
        finally:
            stop_children(children, received[0] if received else signal.SIGTERM)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C while the embedded servers were starting
        sys.exit(130)
