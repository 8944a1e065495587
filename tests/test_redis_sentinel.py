"""REDIS_URL through Redis Sentinel: the URL's forms, then the API and a worker on a private
master + replica + sentinel, before and after a failover."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis as sync_redis
from fastapi import FastAPI

from shared.config import Settings
from shared.redis_urls import SentinelURL, parse_sentinel_url
from tests.backends import Backends, free_port
from tests.conftest import TEAM, isolated, running_worker, serve

REDIS_SERVER = shutil.which("redis-server")
SERVICE = "mcpq-master"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", None),
        ("redis+sentinel://10.0.0.1/mymaster", SentinelURL((("10.0.0.1", 26379),), "mymaster")),
        (
            "rediss+sentinel://:s%40cret@a:1,b:2,[::1]:3/m/5",
            SentinelURL((("a", 1), ("b", 2), ("::1", 3)), "m", db=5, password="s@cret", tls=True),
        ),
        ("redis+sentinel://u:p@h:26380/m/0", SentinelURL((("h", 26380),), "m", username="u", password="p")),
    ],
)
def test_sentinel_url_forms(url: str, expected: SentinelURL | None) -> None:
    assert parse_sentinel_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h:26379",  # no master name
        "redis+sentinel://h:26379/m/x",  # db not a number
        "redis+sentinel://h:26379/m/0/extra",
        "redis+sentinel://h:port/m",
        "redis+sentinel://h/m?sentinel_password=x",  # sentinels are asked without a password
    ],
)
def test_malformed_sentinel_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_sentinel_url(url)


def start_redis(workdir: Path, args: list[str], name: str) -> tuple[subprocess.Popen[bytes], int]:
    assert REDIS_SERVER is not None
    for _attempt in range(3):  # a free port can be taken before the server binds it
        port = free_port()
        log = workdir / f"{name}.log"
        proc = subprocess.Popen(
            [REDIS_SERVER, *args, "--port", str(port), "--bind", "127.0.0.1", "--logfile", str(log)],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(sync_redis.RedisError):
                if sync_redis.Redis(port=port, socket_timeout=1).ping():
                    return proc, port
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    pytest.fail(f"{name} did not start (see {workdir}/{name}.log)")


@pytest.fixture(scope="module")
def sentinel_setup() -> Iterator[tuple[int, int, int]]:
    """A private master, its replica and one sentinel watching them: (master, replica, sentinel)."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    workdir = Path(tempfile.mkdtemp(prefix="mcpq-sentinel-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        plain = ["--save", "", "--appendonly", "no"]
        master, master_port = start_redis(workdir, plain, "master")
        procs.append(master)
        replica, replica_port = start_redis(
            workdir, [*plain, "--replicaof", "127.0.0.1", str(master_port)], "replica"
        )
        procs.append(replica)
        config = workdir / "sentinel.conf"  # sentinel rewrites its config file: one of its own
        config.write_text(
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 2000\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
        )
        sentinel, sentinel_port = start_redis(workdir, [str(config), "--sentinel"], "sentinel")
        procs.append(sentinel)
        wait_for(lambda: known_replicas(sentinel_port) >= 1, "the sentinel to find the replica")
        yield master_port, replica_port, sentinel_port
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def known_replicas(sentinel_port: int) -> int:
    replicas = sync_redis.Redis(port=sentinel_port).execute_command("SENTINEL", "REPLICAS", SERVICE)
    return len(replicas)


def master_port_now(sentinel_port: int) -> int:
    _host, port = sync_redis.Redis(port=sentinel_port, decode_responses=True).execute_command(
        "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE
    )
    return int(port)


def wait_for(check: object, what: str, timeout: float = 30) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
async def through_sentinel(
    settings: Settings, sentinel_setup: tuple[int, int, int], client: httpx.AsyncClient
) -> AsyncIterator[tuple[Settings, FastAPI, httpx.AsyncClient]]:
    # `client` is asked for so that the shared test team exists in the database.
    _, _, sentinel_port = sentinel_setup
    own = isolated(settings, redis_url=f"redis+sentinel://127.0.0.1:{sentinel_port}/{SERVICE}/0")
    async with running_worker(own), serve(own) as (app, http):
        yield own, app, http


async def echo(http: httpx.AsyncClient, gateway: str) -> httpx.Response:
    text = uuid.uuid4().hex
    response = await http.post(f"/v1/tools/{gateway}.echo/call", json={"arguments": {"text": text}})
    if response.status_code == 200:
        assert response.json()["result"]["content"][0]["text"] == text
    return response


async def test_api_and_worker_follow_the_master_through_a_failover(
    through_sentinel: tuple[Settings, FastAPI, httpx.AsyncClient],
    sentinel_setup: tuple[int, int, int],
    backends: Backends,
) -> None:
    own, _, http = through_sentinel
    master_port, replica_port, sentinel_port = sentinel_setup
    gateway = f"sentinel-{uuid.uuid4().hex[:6]}"
    created = await http.post(
        "/v1/gateways", json={"name": gateway, "url": backends.urls["stateful"], "team": TEAM}
    )
    assert created.status_code == 201, created.text
    for _ in range(5):
        assert (await echo(http, gateway)).status_code == 200
    # The jobs went to the master the sentinel named, not to the test run's own Redis.
    assert sync_redis.Redis(port=master_port).keys(f"{own.key_prefix}:*")

    sync_redis.Redis(port=sentinel_port).execute_command("SENTINEL", "FAILOVER", SERVICE)
    await asyncio.to_thread(wait_for, lambda: master_port_now(sentinel_port) == replica_port, "the failover")

    # Connections to the old master fail once (it is a replica now); then calls reach the new one.
    deadline = time.monotonic() + 30
    while (await echo(http, gateway)).status_code != 200:
        assert time.monotonic() < deadline, "no call succeeded after the failover"
        await asyncio.sleep(0.5)
    for _ in range(5):
        response = await echo(http, gateway)
        assert response.status_code == 200, response.text
    assert (await http.get("/ready")).status_code == 200
    assert sync_redis.Redis(port=replica_port).info("replication")["role"] == "master"
    await http.delete(f"/v1/gateways/{created.json()['id']}")
