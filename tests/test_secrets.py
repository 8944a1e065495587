"""Backend credentials: encrypted at rest and in Redis, never returned, never logged; key rotation."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from arq.constants import result_key_prefix
from arq.worker import Worker
from cryptography.fernet import Fernet
from fastapi import FastAPI
from redis.asyncio import Redis

from shared.config import Settings
from shared.gateways import service as gateway_service
from shared.security import SecretBox
from tests.backends import Backends
from tests.conftest import TEAM, libpq_url, unique, worker_env


def test_seal_and_open() -> None:
    box = SecretBox(Fernet.generate_key().decode())
    sealed = box.seal({"Authorization": "Bearer s3cret"})
    assert "s3cret" not in sealed
    assert box.open(sealed) == {"Authorization": "Bearer s3cret"}
    assert box.seal({}) == "" and box.open("") == {}


def test_rotation_keeps_old_ciphertexts_readable() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed_old = SecretBox(old).seal({"X-Key": "v"})
    both = SecretBox(f"{new},{old}")
    assert both.open(sealed_old) == {"X-Key": "v"}
    rotated = both.rotate(sealed_old)
    assert SecretBox(new).open(rotated) == {"X-Key": "v"}  # the first key encrypts
    with pytest.raises(ValueError, match="cannot be decrypted"):
        SecretBox(old).open(rotated)


def test_no_or_bad_keys_refuse_to_start() -> None:
    with pytest.raises(RuntimeError, match="MCPQ_SECRET_KEYS must be set"):
        SecretBox("")
    with pytest.raises(RuntimeError, match="not a Fernet key"):
        SecretBox("not-a-key")


def _raw_gateway_row(database_url: str, gateway_id: str) -> str:
    with psycopg.connect(libpq_url(database_url)) as conn:
        row = conn.execute(
            "SELECT row_to_json(g)::text FROM gateways g WHERE id = %s", (gateway_id,)
        ).fetchone()
    assert row is not None
    return str(row[0])


async def _every_value_in_redis(redis: Redis) -> bytes:
    """Everything this run's Redis db holds, keys and values, as one blob."""
    blob: list[bytes] = []
    async for key in redis.scan_iter(count=1000):
        blob.append(key)
        kind = (await redis.type(key)).decode()
        if kind == "string":
            blob.append(await redis.get(key) or b"")
        elif kind == "hash":
            for field, value in (await redis.hgetall(key)).items():  # type: ignore[misc]
                blob += [field, value]
        elif kind == "zset":
            blob += [member for member, _ in await redis.zrange(key, 0, -1, withscores=True)]
        elif kind in ("list", "set"):
            items = await (redis.lrange(key, 0, -1) if kind == "list" else redis.smembers(key))  # type: ignore[misc]
            blob += list(items)
    return b"\n".join(blob)


@pytest.fixture
async def secret_gateway(
    client: httpx.AsyncClient, backends: Backends, worker: Worker
) -> AsyncIterator[tuple[dict[str, Any], str]]:
    secret = f"sk-{uuid.uuid4().hex}"
    response = await client.post(
        "/v1/gateways",
        json={
            "name": unique(),
            "url": backends.urls["legacy"],
            "team": TEAM,
            "headers": {"X-Api-Key": secret},
        },
    )
    assert response.status_code == 201, response.text
    gateway: dict[str, Any] = response.json()
    yield gateway, secret
    await client.delete(f"/v1/gateways/{gateway['id']}")


async def test_no_plaintext_credential_in_db_redis_api_or_logs(
    app: FastAPI,
    client: httpx.AsyncClient,
    backends: Backends,
    secret_gateway: tuple[dict[str, Any], str],
    database_url: str,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    gateway, secret = secret_gateway
    call = await client.post(f"/v1/tools/{gateway['name']}.echo/call", json={"arguments": {"text": "hi"}})
    assert call.status_code == 200, call.text
    # The worker decrypted the header and sent it to the backend.
    assert backends.legacy.last_headers.get("x-api-key") == secret

    row = await asyncio.to_thread(_raw_gateway_row, database_url, gateway["id"])
    assert secret not in row
    assert json.loads(row)["headers_enc"]

    redis: Redis = app.state.ctx.queue.redis
    # The call's payload as arq keeps it (with its result): the headers travel only encrypted.
    stored = json.loads(await redis.get(result_key_prefix + call.json()["job_id"]) or b"{}")
    backend = stored["a"][0]["backend"]
    assert "headers" not in backend
    assert SecretBox(settings.secret_keys).open(backend["headers_enc"]) == {"X-Api-Key": secret}
    assert secret.encode() not in await _every_value_in_redis(redis)

    for path in (
        "/v1/gateways",
        f"/v1/gateways/{gateway['id']}",
        "/v1/tools",
        f"/v1/jobs/{call.json()['job_id']}",
    ):
        shown = await client.get(path)
        assert shown.status_code == 200 and secret not in shown.text
    refreshed = await client.post(f"/v1/gateways/{gateway['id']}/refresh")
    assert refreshed.status_code == 200 and secret not in refreshed.text
    assert secret not in caplog.text


async def test_rotate_reencrypts_every_stored_header(
    app: FastAPI,
    client: httpx.AsyncClient,
    secret_gateway: tuple[dict[str, Any], str],
    database_url: str,
    settings: Settings,
) -> None:
    gateway, secret = secret_gateway
    old_key, new_key = settings.secret_keys, Fernet.generate_key().decode()
    before = json.loads(await asyncio.to_thread(_raw_gateway_row, database_url, gateway["id"]))["headers_enc"]

    # The command an operator runs, with the new key put first.
    env = {**worker_env(settings), "MCPQ_SECRET_KEYS": f"{new_key},{old_key}"}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "shared.keytool", "rotate"],
        env=env,
        cwd=os.getcwd(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "re-encrypted" in done.stdout
    try:
        after = json.loads(await asyncio.to_thread(_raw_gateway_row, database_url, gateway["id"]))[
            "headers_enc"
        ]
        assert after != before
        assert SecretBox(new_key).open(after) == {"X-Api-Key": secret}  # readable without the old key
        with pytest.raises(ValueError):
            SecretBox(old_key).open(after)
    finally:
        # Back to the key the running API and worker hold, so later tests can use stored gateways.
        await gateway_service.rotate_secrets(app.state.ctx.session_factory, SecretBox(f"{old_key},{new_key}"))
    call = await client.post(f"/v1/tools/{gateway['name']}.echo/call", json={"arguments": {"text": "again"}})
    assert call.status_code == 200, call.text
