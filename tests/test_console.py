"""GET /v1/jobs (the newest jobs a caller may see), GET /v1/queue, and the console's static files.

Jobs here are submitted to an API of their own queue with no worker on it (`isolated`), so they
stay queued and each test sees exactly the jobs it made.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from arq.worker import Worker
from fastapi import FastAPI

from shared.config import Settings
from shared.jobs.store import RECENT_JOBS_KEPT
from tests.backends import Backends
from tests.conftest import isolated, serve, unique
from tests.jobs_helpers import store_of

Served = tuple[FastAPI, httpx.AsyncClient]


@dataclass
class Teams:
    """Teams A and B, each with a gateway and a token per role (B has a member only)."""

    ids: dict[str, str] = field(default_factory=dict)
    gateways: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, caller: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[caller]}"}


@pytest.fixture(scope="module")
async def teams(client: httpx.AsyncClient, backends: Backends, worker: Worker) -> AsyncIterator[Teams]:
    made = Teams()
    for team in ("A", "B"):
        created = await client.post("/v1/teams", json={"name": unique(f"console-{team.lower()}")})
        assert created.status_code == 201, created.text
        made.ids[team] = created.json()["id"]
        gateway = await client.post(
            "/v1/gateways",
            json={"name": unique(), "url": backends.urls["stateless"], "team": made.ids[team]},
        )
        assert gateway.status_code == 201, gateway.text
        made.gateways[team] = gateway.json()["name"]
        for role in ("member", "viewer") if team == "A" else ("member",):
            token = await client.post(
                "/v1/tokens", json={"name": unique("tok"), "team": made.ids[team], "role": role}
            )
            assert token.status_code == 201, token.text
            made.tokens[f"{team}:{role}"] = token.json()["token"]
    yield made
    for team_id in made.ids.values():
        await client.delete(f"/v1/teams/{team_id}")


@pytest.fixture
async def served_alone(settings: Settings) -> AsyncIterator[Served]:
    """An API on a queue of its own, with no worker: its jobs stay queued."""
    async with serve(isolated(settings)) as served:
        yield served


async def submit(http: httpx.AsyncClient, teams: Teams, team: str, text: str = "hi") -> str:
    response = await http.post(
        f"/v1/tools/{teams.gateways[team]}.echo/jobs",
        json={"arguments": {"text": text}},
        headers=teams.auth(f"{team}:member"),
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    # Listings are newest first by enqueue millisecond, and in id order within one
    # (test_jobs_of_one_millisecond_page_in_id_order): jobs a millisecond apart list in the
    # order they were submitted, which the tests below compare against.
    await asyncio.sleep(0.002)
    return job_id


async def listed(http: httpx.AsyncClient, query: str = "", **headers: str) -> dict[str, Any]:
    response = await http.get(f"/v1/jobs{query}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_team_lists_its_own_jobs_only(served_alone: Served, teams: Teams) -> None:
    _, http = served_alone
    a_jobs = [await submit(http, teams, "A", str(i)) for i in range(3)]
    b_jobs = [await submit(http, teams, "B", str(i)) for i in range(2)]

    as_a = await listed(http, **teams.auth("A:member"))
    assert [job["id"] for job in as_a["items"]] == a_jobs[::-1]  # newest first
    assert {job["team"] for job in as_a["items"]} == {teams.ids["A"]}
    assert as_a["next_cursor"] is None
    first = as_a["items"][0]
    assert first["status"] == "queued" and first["item"] == f"{teams.gateways['A']}.echo"
    assert "result" not in first

    as_b = await listed(http, **teams.auth("B:member"))
    assert [job["id"] for job in as_b["items"]] == b_jobs[::-1]

    # The platform admin (the served client) sees every team's jobs.
    everyone = await listed(http)
    assert [job["id"] for job in everyone["items"]] == (a_jobs + b_jobs)[::-1]


async def test_viewers_may_not_list_jobs(served_alone: Served, teams: Teams) -> None:
    _, http = served_alone
    await submit(http, teams, "A")
    response = await http.get("/v1/jobs", headers=teams.auth("A:viewer"))
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "forbidden"


async def test_listing_without_a_token_is_401(served_alone: Served) -> None:
    _, http = served_alone
    assert (await http.get("/v1/jobs", headers={"Authorization": ""})).status_code == 401
    assert (await http.get("/v1/queue", headers={"Authorization": ""})).status_code == 401


async def test_filter_by_status(served_alone: Served, teams: Teams) -> None:
    app, http = served_alone
    running, queued, cancelled = [await submit(http, teams, "A", str(i)) for i in range(3)]
    # No worker runs here: claim the oldest job as one would.
    [claim] = await store_of(app).claim("worker-x", 1)
    assert claim.job_id == running
    assert (await http.delete(f"/v1/jobs/{cancelled}", headers=teams.auth("A:member"))).status_code == 200

    def ids(body: dict[str, Any]) -> list[str]:
        return [job["id"] for job in body["items"]]

    auth = teams.auth("A:member")
    assert ids(await listed(http, "?status=running", **auth)) == [running]
    assert ids(await listed(http, "?status=queued&status=running", **auth)) == [queued, running]
    assert ids(await listed(http, "?status=cancelled", **auth)) == [cancelled]
    assert ids(await listed(http, "?status=completed", **auth)) == []


async def test_pages_follow_the_cursor_without_repeats(served_alone: Served, teams: Teams) -> None:
    _, http = served_alone
    auth = teams.auth("A:member")
    made = [await submit(http, teams, "A", str(i)) for i in range(5)]
    page = await listed(http, "?limit=2", **auth)
    seen = [job["id"] for job in page["items"]]
    # A job submitted between two pages comes first on a new listing, not into the next page.
    newer = await submit(http, teams, "A", "newer")
    while page["next_cursor"]:
        page = await listed(http, f"?limit=2&cursor={page['next_cursor']}", **auth)
        seen += [job["id"] for job in page["items"]]
    assert seen == made[::-1]
    assert (await listed(http, "?limit=1", **auth))["items"][0]["id"] == newer


async def test_jobs_of_one_millisecond_page_in_id_order(
    served_alone: Served,
) -> None:
    app, _ = served_alone
    store = store_of(app)
    key = store.recent_key(uuid.uuid4().hex)
    await app.state.ctx.queue.redis.zadd(key, {"a": 5, "b": 5, "c": 5, "d": 4, "e": 6})
    assert await store.recent_ids(key, None, 2) == [(6, "e"), (5, "c")]
    assert await store.recent_ids(key, (5, "c"), 2) == [(5, "b"), (5, "a")]
    assert await store.recent_ids(key, (5, "a"), 2) == [(4, "d")]
    assert await store.recent_ids(key, (4, "d"), 2) == []


async def test_the_index_keeps_the_newest_jobs(served_alone: Served, teams: Teams) -> None:
    """Enqueueing bounds each index of recent jobs to its newest RECENT_JOBS_KEPT entries."""
    app, http = served_alone
    redis = app.state.ctx.queue.redis
    key = store_of(app).recent_key(teams.ids["A"])
    await redis.delete(key)
    a_while_ago = int(time.time() * 1000) - 60_000
    await redis.zadd(key, {f"old-{i}": a_while_ago + i for i in range(RECENT_JOBS_KEPT)})
    job_id = await submit(http, teams, "A")
    assert await redis.zcard(key) == RECENT_JOBS_KEPT
    assert await redis.zscore(key, "old-0") is None
    assert (await listed(http, "?limit=1", **teams.auth("A:member")))["items"][0]["id"] == job_id


@pytest.mark.parametrize(
    "query",
    ["?limit=0", "?limit=201", "?limit=-1", "?limit=x", "?status=done", "?status=QUEUED"],
)
async def test_bad_listing_parameters_are_422(served_alone: Served, query: str) -> None:
    _, http = served_alone
    response = await http.get(f"/v1/jobs{query}")
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error"


@pytest.mark.parametrize("cursor", ["nonsense", "WzEsMiwzXQ==", "WyJ4IiwgMV0="])
async def test_a_bad_cursor_is_400(served_alone: Served, cursor: str) -> None:
    _, http = served_alone
    response = await http.get(f"/v1/jobs?cursor={cursor}")
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "bad_request", "detail": "invalid cursor"}


async def test_queue_shows_depth_and_running(served_alone: Served, teams: Teams) -> None:
    app, http = served_alone
    assert (await http.get("/v1/queue", headers=teams.auth("A:viewer"))).json() == {"depth": 0, "running": 0}
    jobs = [await submit(http, teams, "B", str(i)) for i in range(3)]
    [claim] = await store_of(app).claim("worker-x", 1)  # the oldest, as a worker would
    assert claim.job_id == jobs[0]
    # Any role reads it; it counts every team's jobs.
    for caller in ("A:viewer", "A:member", "B:member"):
        response = await http.get("/v1/queue", headers=teams.auth(caller))
        assert response.json() == {"depth": 2, "running": 1}, caller


async def test_console_files_are_served(served_alone: Served) -> None:
    _, http = served_alone
    page = await http.get("/ui/", headers={"Authorization": ""})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="console.js"' in page.text
    for asset, media in (("console.js", "javascript"), ("console.css", "text/css")):
        response = await http.get(f"/ui/{asset}", headers={"Authorization": ""})
        assert response.status_code == 200 and media in response.headers["content-type"], asset
    assert (await http.get("/ui/nothing.js")).status_code == 404
