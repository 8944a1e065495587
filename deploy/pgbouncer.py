"""A private PgBouncer in transaction pooling mode, for tests and the load benchmark.

`running_pgbouncer(database_url)` starts Debian's `pgbouncer` (apt-get install pgbouncer;
.ci/deps does it) on a free loopback port in front of that database, with
`pool_mode = transaction` and `idle_transaction_timeout = 1`: a client that keeps a transaction
open for a second is disconnected. mcpq behind it needs MCPQ_DB_PGBOUNCER=true (README:
PgBouncer). Run as root, pgbouncer drops to the `postgres` system user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

__all__ = ["PgBouncer", "pgbouncer_binary", "running_pgbouncer"]


def pgbouncer_binary() -> str | None:
    """The pgbouncer executable (Debian puts it in /usr/sbin), or None."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")


@dataclass(frozen=True)
class PgBouncer:
    port: int
    log_path: Path

    def url(self, database_url: str) -> str:
        """`database_url` (SQLAlchemy form) pointed at this pgbouncer instead."""
        url = make_url(database_url).set(host="127.0.0.1", port=self.port, query={})
        return url.render_as_string(hide_password=False)


def pgbouncer_config(port: int, database_url: str, pool_size: int, stats_period_s: int) -> str:
    url = make_url(database_url)
    host = url.host or str(url.query.get("host", "127.0.0.1"))
    target = f"host={host} port={url.port or 5432} dbname={url.database} user={url.username or 'postgres'}"
    if url.password:
        target += f" password={url.password}"
    return "\n".join(
        [
            "[databases]",
            f"{url.database} = {target}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {port}",
            "unix_socket_dir =",
            # Every client logs in as the database line's user; nothing to authenticate on loopback.
            "auth_type = any",
            "admin_users = postgres",
            "pool_mode = transaction",
            "idle_transaction_timeout = 1",
            f"default_pool_size = {pool_size}",
            "max_client_conn = 10000",
            "ignore_startup_parameters = extra_float_digits",
            # SHOW STATS totals are refreshed every stats_period seconds.
            f"stats_period = {stats_period_s}",
        ]
    )


@contextlib.contextmanager
def running_pgbouncer(
    database_url: str, *, pool_size: int = 4, stats_period_s: int = 60
) -> Iterator[PgBouncer]:
    """A private pgbouncer in front of this database (server connections: `pool_size`)."""
    binary = pgbouncer_binary()
    if binary is None:
        raise RuntimeError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    workdir = Path(tempfile.mkdtemp(prefix="mcpq-pgbouncer-"))
    # pgbouncer refuses to run as root: it drops to `postgres`, who must read the config.
    workdir.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    log_path = workdir / "pgbouncer.log"
    try:
        for _attempt in range(3):  # a free port can be taken before pgbouncer binds it
            port = _free_port()
            config = workdir / "pgbouncer.ini"
            config.write_text(pgbouncer_config(port, database_url, pool_size, stats_period_s))
            config.chmod(0o644)
            cmd = [binary, *(["-u", "postgres"] if os.geteuid() == 0 else []), str(config)]
            # It logs to stderr: a file opened here stays writable after it drops privileges.
            with log_path.open("a") as log:
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            if _wait_listening(port, proc):
                break
        else:
            raise RuntimeError(f"pgbouncer did not start:\n{log_path.read_text()}")
        try:
            yield PgBouncer(port, log_path)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
