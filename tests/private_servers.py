"""Servers a fault test may stop and start: never the shared ones every other test uses.

- `PrivateRedis`: a redis-server (or valkey-server) on a port of its own, in a directory of its
  own, with an append-only file as compose.yaml runs it, so a restart keeps what was written.
- `supervised_worker`: an in-process worker on given settings, started again if it stops (as
  an orchestrator's restart policy does): a fault test asks that jobs end, whether the worker
  rides out a Redis outage or is restarted after one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from shared.config import Settings
from tests.conftest import make_worker

log = logging.getLogger(__name__)


REDIS_SERVER = shutil.which("redis-server") or shutil.which("valkey-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    def __init__(self, data_dir: Path, *, appendfsync: str = "everysec") -> None:
        self.data_dir = data_dir
        self.appendfsync = appendfsync
        self.port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start on this server's port and directory (again, after a stop: same data)."""
        assert REDIS_SERVER is not None
        options = ["--bind", "127.0.0.1", "--save", "", "--dir", str(self.data_dir)]
        options += ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        for _ in range(5):
            self._proc = subprocess.Popen(
                [REDIS_SERVER, "--port", str(self.port), *options],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self._proc.poll() is None:
                if self._answers():
                    self._started = True
                    return
                time.sleep(0.05)
            self._proc.kill()
            self._proc.wait()
            if self._started:
                break  # a restart must keep its port: clients know only that one
            # The port was taken before the server bound it: take another (no client knows it yet).
            self.port = _free_port()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: Redis writes its append-only file and exits. SIGKILL: a crash."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.send_signal(sig)
            proc.wait(10)

    def _answers(self) -> bool:
        # PONG, not just an open port: while it loads its append-only file Redis answers LOADING.
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
        return False


@contextlib.asynccontextmanager
async def supervised_worker(settings: Settings) -> AsyncIterator[None]:
    """An in-process worker on `settings`' queue, restarted whenever its run ends (a crash)."""
    # Any: the worker's class is whatever tests.conftest.make_worker builds.
    started: list[Any] = []

    async def supervise() -> None:
        while True:
            worker = make_worker(settings)
            started.append(worker)
            try:
                await worker.async_run()
            except Exception as exc:
                log.warning("worker stopped (%s); starting another", exc)
            await asyncio.sleep(0.5)

    task = asyncio.create_task(supervise())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for worker in started:
            # Let jobs finishing their bookkeeping end first: arq's close cancels them, and its
            # shutdown hook (which stops the worker's listeners) is skipped if one was cancelled.
            if worker.tasks:
                await asyncio.wait(list(worker.tasks.values()), timeout=5)
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await worker.close()
