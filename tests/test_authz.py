"""Who may do what: two teams x three roles (+ the platform admin) x every endpoint, list
scoping, token revocation and expiry, and the per-team in-flight limit.

Team A owns a private gateway; team B owns a private and a public one. Each cell of the matrix
is one request by one caller, and gets exactly one status: another team's private items answer
404 (nothing leaks about them), an item the caller sees but its role may not touch answers 403.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
from arq.worker import Worker
from fastapi import FastAPI

from shared import cache
from shared.config import Settings
from shared.jobs.schemas import JobKind
from tests.backends import Backends
from tests.conftest import libpq_url, unique
from tests.jobs_helpers import plant_record

CALLERS = ("A:admin", "A:member", "A:viewer", "B:admin", "B:member", "B:viewer", "platform")
A_CALLERS = CALLERS[:3]


@dataclass
class World:
    http: httpx.AsyncClient  # authenticated as the platform admin
    app: FastAPI
    backends: Backends
    teams: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    # "A": team A's private gateway, "B": team B's private one, "P": team B's public one.
    gateways: dict[str, dict[str, Any]] = field(default_factory=dict)
    # "A" and "B": a virtual server of each team, composing its own gateway's echo.
    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    job_a: str = ""

    def auth(self, caller: str) -> dict[str, str]:
        secret = self.secrets.get(caller)
        return {"Authorization": f"Bearer {secret}"} if secret else {}

    def team_id(self, team: str) -> str:
        return str(self.teams[team]["id"])

    async def as_(self, caller: str, method: str, path: str, body: Any = None) -> httpx.Response:
        return await self.http.request(method, path, json=body, headers=self.auth(caller))

    async def gateway(self, team: str, visibility: str = "team") -> dict[str, Any]:
        response = await self.http.post(
            "/v1/gateways",
            json={
                "name": unique(),
                "url": self.backends.urls["stateless"],
                "team": self.team_id(team),
                "visibility": visibility,
            },
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def token(self, team: str, role: str, **extra: Any) -> dict[str, Any]:
        body = {"name": unique("tok"), "team": self.team_id(team), "role": role, **extra}
        response = await self.http.post("/v1/tokens", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def server(self, team: str) -> dict[str, Any]:
        body = {
            "name": unique("srv"),
            "team": self.team_id(team),
            "tools": [f"{self.gateways[team]['name']}.echo"],
        }
        response = await self.http.post("/v1/servers", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def resource(self, gateway: str) -> str:
        return f"{self.gateways[gateway]['name']}:demo://readme"

    async def queued_job(self, team: str) -> str:
        """A job record of `team` still queued (no worker will see it), so it can be cancelled."""
        job_id = uuid.uuid4().hex
        await plant_record(
            self.app.state.ctx.queue.redis,
            self.app.state.settings,
            job_id,
            JobKind.CALL_TOOL.value,
            "x.echo",
            self.team_id(team),
        )
        return job_id


@pytest.fixture(scope="module")
async def world(
    client: httpx.AsyncClient, app: FastAPI, backends: Backends, worker: Worker
) -> AsyncIterator[World]:
    w = World(http=client, app=app, backends=backends)
    for team in ("A", "B"):
        created = await client.post("/v1/teams", json={"name": unique(f"team-{team.lower()}")})
        assert created.status_code == 201, created.text
        w.teams[team] = created.json()
        for role in ("admin", "member", "viewer"):
            w.secrets[f"{team}:{role}"] = (await w.token(team, role))["token"]
    w.gateways = {"A": await w.gateway("A"), "B": await w.gateway("B"), "P": await w.gateway("B", "public")}
    w.servers = {"A": await w.server("A"), "B": await w.server("B")}
    submitted = await w.as_(
        "A:member", "POST", f"/v1/tools/{w.gateways['A']['name']}.echo/jobs", {"arguments": {"text": "a"}}
    )
    assert submitted.status_code == 202, submitted.text
    w.job_a = submitted.json()["job_id"]
    done = await w.as_("A:member", "GET", f"/v1/jobs/{w.job_a}?wait=10")
    assert done.json()["status"] == "completed", done.text
    yield w
    for team in w.teams.values():  # cascades to their gateways, catalog, members and tokens
        await client.delete(f"/v1/teams/{team['id']}")


Request = tuple[str, str, Any]
Builder = Callable[[World, str], Awaitable[Request]]
CASES: list[tuple[str, str, Builder]] = []


def case(name: str, expected: str) -> Callable[[Builder], Builder]:
    """`expected`: the status for each of CALLERS, in order."""
    assert len(expected.split()) == len(CALLERS)

    def register(build: Builder) -> Builder:
        CASES.append((name, expected, build))
        return build

    return register


# ---- teams and members ----------------------------------------------------------------------
#                                       A:adm A:mem A:vie B:adm B:mem B:vie platform
@case("POST /v1/teams", "403 403 403 403 403 403 201")
async def _(w: World, c: str) -> Request:
    return "POST", "/v1/teams", {"name": unique("team")}


@case("GET /v1/teams", "200 200 200 200 200 200 200")
async def _(w: World, c: str) -> Request:
    return "GET", "/v1/teams", None


@case("GET /v1/teams/{A}", "200 200 200 404 404 404 200")
async def _(w: World, c: str) -> Request:
    return "GET", f"/v1/teams/{w.team_id('A')}", None


@case("PATCH /v1/teams/{A}", "200 403 403 404 404 404 200")
async def _(w: World, c: str) -> Request:
    return "PATCH", f"/v1/teams/{w.team_id('A')}", {"description": f"set by {c}"}


@case("DELETE /v1/teams/{A}", "403 403 403 404 404 404 204")
async def _(w: World, c: str) -> Request:
    if c == "platform":  # it may; delete a team of its own making instead of the world's
        created = await w.http.post("/v1/teams", json={"name": unique("doomed")})
        return "DELETE", f"/v1/teams/{created.json()['id']}", None
    return "DELETE", f"/v1/teams/{w.team_id('A')}", None


@case("POST /v1/teams/{A}/members", "201 403 403 404 404 404 201")
async def _(w: World, c: str) -> Request:
    return "POST", f"/v1/teams/{w.team_id('A')}/members", {"email": f"{uuid.uuid4().hex[:8]}@a.example"}


@case("GET /v1/teams/{A}/members", "200 200 200 404 404 404 200")
async def _(w: World, c: str) -> Request:
    return "GET", f"/v1/teams/{w.team_id('A')}/members", None


@case("DELETE /v1/teams/{A}/members/{email}", "204 403 403 404 404 404 204")
async def _(w: World, c: str) -> Request:
    email = f"{uuid.uuid4().hex[:8]}@a.example"
    added = await w.http.post(f"/v1/teams/{w.team_id('A')}/members", json={"email": email, "role": "viewer"})
    assert added.status_code == 201, added.text
    return "DELETE", f"/v1/teams/{w.team_id('A')}/members/{email}", None


# ---- tokens ---------------------------------------------------------------------------------
@case("POST /v1/tokens team=A", "201 403 403 404 404 404 201")
async def _(w: World, c: str) -> Request:
    return "POST", "/v1/tokens", {"name": "t", "team": w.team_id("A"), "role": "viewer"}


@case("GET /v1/tokens", "200 403 403 200 403 403 200")
async def _(w: World, c: str) -> Request:
    return "GET", "/v1/tokens", None


@case("DELETE /v1/tokens/{A token}", "204 403 403 404 404 404 204")
async def _(w: World, c: str) -> Request:
    return "DELETE", f"/v1/tokens/{(await w.token('A', 'viewer'))['id']}", None


# ---- gateways -------------------------------------------------------------------------------
@case("POST /v1/gateways team=A", "201 403 403 404 404 404 201")
async def _(w: World, c: str) -> Request:
    body = {"name": unique(), "url": w.backends.urls["stateless"], "team": w.team_id("A")}
    return "POST", "/v1/gateways", body


@case("GET /v1/gateways", "200 200 200 200 200 200 200")
async def _(w: World, c: str) -> Request:
    return "GET", "/v1/gateways", None


@case("GET /v1/gateways/{A}", "200 200 200 404 404 404 200")
async def _(w: World, c: str) -> Request:
    return "GET", f"/v1/gateways/{w.gateways['A']['id']}", None


@case("GET /v1/gateways/{public of B}", "200 200 200 200 200 200 200")
async def _(w: World, c: str) -> Request:
    return "GET", f"/v1/gateways/{w.gateways['P']['id']}", None


@case("POST /v1/gateways/{A}/refresh", "200 403 403 404 404 404 200")
async def _(w: World, c: str) -> Request:
    return "POST", f"/v1/gateways/{w.gateways['A']['id']}/refresh", None


@case("POST /v1/gateways/{public of B}/refresh", "403 403 403 200 403 403 200")
async def _(w: World, c: str) -> Request:
    return "POST", f"/v1/gateways/{w.gateways['P']['id']}/refresh", None


@case("PATCH /v1/gateways/{A}", "200 403 403 404 404 404 200")
async def _(w: World, c: str) -> Request:
    return "PATCH", f"/v1/gateways/{w.gateways['A']['id']}", {"timeout_s": 20}


@case("PATCH /v1/gateways/{public of B}", "403 403 403 200 403 403 200")
async def _(w: World, c: str) -> Request:
    return "PATCH", f"/v1/gateways/{w.gateways['P']['id']}", {"timeout_s": 20}


@case("PATCH /v1/gateways/{A} url", "200 403 403 404 404 404 200")
async def _(w: World, c: str) -> Request:
    return "PATCH", f"/v1/gateways/{w.gateways['A']['id']}", {"url": w.backends.urls["stateless"]}


# Stdio fields on an HTTP gateway: 422 for whoever may patch it. Who may patch a stdio gateway
# (the platform admin only) is in tests/test_stdio.py: this run's API allows no stdio commands.
@case("PATCH /v1/gateways/{A} command", "422 403 403 404 404 404 422")
async def _(w: World, c: str) -> Request:
    return "PATCH", f"/v1/gateways/{w.gateways['A']['id']}", {"command": "/bin/sh"}


@case("DELETE /v1/gateways/{A}", "204 403 403 404 404 404 204")
async def _(w: World, c: str) -> Request:
    return "DELETE", f"/v1/gateways/{(await w.gateway('A'))['id']}", None


@case("DELETE /v1/gateways/{public of B}", "403 403 403 204 403 403 204")
async def _(w: World, c: str) -> Request:
    return "DELETE", f"/v1/gateways/{(await w.gateway('B', 'public'))['id']}", None


# ---- tools ----------------------------------------------------------------------------------
@case("GET /v1/tools", "200 200 200 200 200 200 200")
async def _(w: World, c: str) -> Request:
    return "GET", "/v1/tools", None


@case("GET /v1/tools/{A}.echo", "200 200 200 404 404 404 200")
async def _(w: World, c: str) -> Request:
    return "GET", f"/v1/tools/{w.gateways['A']['name']}.echo", None


@case("GET /v1/tools/{id of A's echo}", "200 200 200 404 404 404 200")
async def _(w: World, c: str) -> Request:
    listed = await w.http.get("/v1/tools", params={"gateway": w.gateways["A"]["name"]})
    tool_id = next(t["id"] for t in listed.json()["items"] if t["gateway_id"] == w.gateways["A"]["id"])
    return "GET", f"/v1/tools/{tool_id}", None


@case("GET /v1/tools/{public}.echo", "200 200 200 200 200 200 200")
async def _(w: World, c: str) -> Request:
    return "GET", f"/v1/tools/{w.gateways['P']['name']}.echo", None


@case("POST /v1/tools/{A}.echo/call", "200 200 403 404 404 404 200")
async def _(w: World, c: str) -> Request:
    return "POST", f"/v1/tools/{w.gateways['A']['name']}.echo/call", {"arguments": {"text": c}}


@case("POST /v1/tools/{B}.echo/call", "404 404 404 200 200 403 200")
async def _(w: World, c: str) -> Request:
    return "POST", f"/v1/tools/{w.gateways['B']['name']}.echo/call", {"arguments": {"text": c}}


@case("POST /v1/tools/{public}.echo/call", "200 200 403 200 200 403 200")
async def _(w: World, c: str) -> Request:
    return "POST", f"/v1/tools/{w.gateways['P']['name']}.echo/call", {"arguments": {"text": c}}


@case("POST /v1/tools/{A}.echo/jobs", "202 202 403 404 404 404 202")
async def _(w: World, c: str) -> Request:
    return "POST", f"/v1/tools/{w.gateways['A']['name']}.echo/jobs", {"arguments": {"text": c}}


# ---- resources ------------------------------------------------------------------------------
@case("GET /v1/resources", "200 200 200 200 200 200 200")
async def _(w: World, c: str) -> Request:
    return "GET", "/v1/resources", None


@case("GET /v1/resources/{A}:uri", "200 200 200 404 404 404 200")
async def _(w: World, c: str) -> Request:
    return "GET", f"/v1/resources/{w.resource('A')}", None


@case("POST /v1/resources/{A}:uri/read", "200 200 403 404 404 404 200")
async def _(w: World, c: str) -> Request:
    return "POST", f"/v1/resources/{w.resource('A')}/read", {}


@case("POST /v1/resources/{public}:uri/read", "200 200 403 200 200 403 200")
async def _(w: World, c: str) -> Request:
    return "POST", f"/v1/resources/{w.resource('P')}/read", {}


@case("POST /v1/resources/{A}:uri/jobs", "202 202 403 404 404 404 202")
async def _(w: World, c: str) -> Request:
    return "POST", f"/v1/resources/{w.resource('A')}/jobs", {}


# ---- prompts --------------------------------------------------------------------------------
@case("GET /v1/prompts", "200 200 200 200 200 200 200")
async def _(w: World, c: str) -> Request:
    return "GET", "/v1/prompts", None


@case("GET /v1/prompts/{A}.greet", "200 200 200 404 404 404 200")
async def _(w: World, c: str) -> Request:
    return "GET", f"/v1/prompts/{w.gateways['A']['name']}.greet", None


@case("POST /v1/prompts/{A}.greet/render", "200 200 403 404 404 404 200")
async def _(w: World, c: str) -> Request:
    return "POST", f"/v1/prompts/{w.gateways['A']['name']}.greet/render", {"arguments": {"name": c}}


@case("POST /v1/prompts/{public}.greet/render", "200 200 403 200 200 403 200")
async def _(w: World, c: str) -> Request:
    return "POST", f"/v1/prompts/{w.gateways['P']['name']}.greet/render", {"arguments": {"name": c}}


@case("POST /v1/prompts/{A}.greet/jobs", "202 202 403 404 404 404 202")
async def _(w: World, c: str) -> Request:
    return "POST", f"/v1/prompts/{w.gateways['A']['name']}.greet/jobs", {"arguments": {"name": c}}


# ---- virtual servers ------------------------------------------------------------------------
@case("POST /v1/servers team=A", "201 403 403 404 404 404 201")
async def _(w: World, c: str) -> Request:
    tools = [f"{w.gateways['A']['name']}.echo"]
    return "POST", "/v1/servers", {"name": unique("srv"), "team": w.team_id("A"), "tools": tools}


@case("GET /v1/servers", "200 200 200 200 200 200 200")
async def _(w: World, c: str) -> Request:
    return "GET", "/v1/servers", None


@case("GET /v1/servers/{A}", "200 200 200 404 404 404 200")
async def _(w: World, c: str) -> Request:
    return "GET", f"/v1/servers/{w.servers['A']['id']}", None


@case("PATCH /v1/servers/{A}", "200 403 403 404 404 404 200")
async def _(w: World, c: str) -> Request:
    return "PATCH", f"/v1/servers/{w.servers['A']['id']}", {"description": f"set by {c}"}


@case("DELETE /v1/servers/{A}", "204 403 403 404 404 404 204")
async def _(w: World, c: str) -> Request:
    return "DELETE", f"/v1/servers/{(await w.server('A'))['id']}", None


# ---- jobs -----------------------------------------------------------------------------------
@case("GET /v1/jobs", "200 200 403 200 200 403 200")
async def _(w: World, c: str) -> Request:
    return "GET", "/v1/jobs", None


@case("GET /v1/queue", "200 200 200 200 200 200 200")
async def _(w: World, c: str) -> Request:
    return "GET", "/v1/queue", None


@case("GET /v1/jobs/{A's job}", "200 200 403 404 404 404 200")
async def _(w: World, c: str) -> Request:
    return "GET", f"/v1/jobs/{w.job_a}", None


@case("GET /v1/jobs/{A's job}?wait=", "200 200 403 404 404 404 200")
async def _(w: World, c: str) -> Request:
    return "GET", f"/v1/jobs/{w.job_a}?wait=5", None


@case("DELETE /v1/jobs/{A's queued job}", "200 200 403 404 404 404 200")
async def _(w: World, c: str) -> Request:
    return "DELETE", f"/v1/jobs/{await w.queued_job('A')}", None


ERROR_KINDS = {403: "forbidden", 404: "not_found"}


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("name", "expected", "build"), CASES, ids=[name for name, _, _ in CASES])
async def test_matrix(world: World, name: str, expected: str, build: Builder, caller: str) -> None:
    want = int(expected.split()[CALLERS.index(caller)])
    method, path, body = await build(world, caller)
    response = await world.as_(caller, method, path, body)
    assert response.status_code == want, f"{caller} {name}: {response.status_code} {response.text}"
    if want in ERROR_KINDS:
        assert response.json()["error"] == ERROR_KINDS[want]


# ---- lists never show another team's items ---------------------------------------------------
async def _all_tools(w: World, caller: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {"limit": 2, **params, **({"cursor": cursor} if cursor else {})}
        page = await w.http.get("/v1/tools", params=query, headers=w.auth(caller))
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if not cursor:
            return items


@pytest.mark.parametrize("caller", A_CALLERS)
async def test_team_a_lists_never_show_team_b_private_items(world: World, caller: str) -> None:
    a, b, public = (world.gateways[k]["id"] for k in ("A", "B", "P"))
    gateways = (await world.as_(caller, "GET", "/v1/gateways")).json()["items"]
    ids = {g["id"] for g in gateways}
    assert {a, public} <= ids and b not in ids
    assert all(g["team_id"] == world.team_id("A") or g["visibility"] == "public" for g in gateways)

    tools = await _all_tools(world, caller)
    tool_gateways = {t["gateway_id"] for t in tools}
    assert {a, public} <= tool_gateways and b not in tool_gateways
    assert await _all_tools(world, caller, gateway=world.gateways["B"]["name"]) == []

    for kind in ("resources", "prompts"):
        listed = (await world.as_(caller, "GET", f"/v1/{kind}?limit=500")).json()["items"]
        names = {item["gateway"] for item in listed}
        assert {world.gateways["A"]["name"], world.gateways["P"]["name"]} <= names
        assert world.gateways["B"]["name"] not in names

    servers = (await world.as_(caller, "GET", "/v1/servers")).json()["items"]
    server_ids = {srv["id"] for srv in servers}
    assert world.servers["A"]["id"] in server_ids and world.servers["B"]["id"] not in server_ids

    teams = (await world.as_(caller, "GET", "/v1/teams")).json()["items"]
    assert [t["id"] for t in teams] == [world.team_id("A")]
    if caller == "A:admin":
        tokens = (await world.as_(caller, "GET", "/v1/tokens")).json()["items"]
        assert tokens and {t["team_id"] for t in tokens} == {world.team_id("A")}
        assert all("token" not in t for t in tokens)  # the secret is shown once, at creation


async def test_platform_admin_lists_everything(world: World) -> None:
    ids = {g["id"] for g in (await world.http.get("/v1/gateways")).json()["items"]}
    assert {world.gateways[k]["id"] for k in ("A", "B", "P")} <= ids
    teams = {t["id"] for t in (await world.http.get("/v1/teams")).json()["items"]}
    assert {world.team_id("A"), world.team_id("B")} <= teams


async def test_a_public_tool_called_by_team_a_is_team_a_job(world: World) -> None:
    call = await world.as_(
        "A:member", "POST", f"/v1/tools/{world.gateways['P']['name']}.echo/call", {"arguments": {"text": "x"}}
    )
    assert call.status_code == 200, call.text
    job_id = call.json()["job_id"]
    mine = await world.as_("A:member", "GET", f"/v1/jobs/{job_id}")
    assert mine.status_code == 200 and mine.json()["team"] == world.team_id("A")
    listed = (await world.as_("A:member", "GET", "/v1/jobs?limit=200")).json()["items"]
    assert job_id in {job["id"] for job in listed}
    for caller in ("B:admin", "B:member"):  # the gateway's own team does not see A's job
        assert (await world.as_(caller, "GET", f"/v1/jobs/{job_id}")).status_code == 404
        assert (await world.as_(caller, "DELETE", f"/v1/jobs/{job_id}")).status_code == 404
        listed = (await world.as_(caller, "GET", "/v1/jobs?limit=200")).json()["items"]
        assert listed and job_id not in {job["id"] for job in listed}
        assert {job["team"] for job in listed} == {world.team_id("B")}


async def test_same_gateway_name_in_two_teams(world: World) -> None:
    name = unique("same")
    made = {}
    for team in ("A", "B"):
        response = await world.http.post(
            "/v1/gateways",
            json={"name": name, "url": world.backends.urls["stateless"], "team": world.team_id(team)},
        )
        assert response.status_code == 201, response.text  # a name taken in B says nothing to A
        made[team] = response.json()["id"]
    for team in ("A", "B"):
        shown = await world.as_(f"{team}:viewer", "GET", f"/v1/tools/{name}.echo")
        assert shown.status_code == 200 and shown.json()["gateway_id"] == made[team]
    both = await _all_tools(world, "platform", gateway=name)
    assert [t["gateway_id"] for t in both if t["name"] == "echo"] == sorted(made.values())
    again = await world.as_(
        "A:admin", "POST", "/v1/gateways", {"name": name, "url": world.backends.urls["stateless"]}
    )
    assert again.status_code == 409
    for gateway_id in made.values():
        await world.http.delete(f"/v1/gateways/{gateway_id}")


# ---- tokens: revoked and expired answer 401 ---------------------------------------------------
async def test_revoked_token_is_401_at_once(world: World) -> None:
    token = await world.token("A", "member")
    headers = {"Authorization": f"Bearer {token['token']}"}
    assert (await world.http.get("/v1/gateways", headers=headers)).status_code == 200  # now cached
    revoked = await world.as_("A:admin", "DELETE", f"/v1/tokens/{token['id']}")
    assert revoked.status_code == 204
    response = await world.http.get("/v1/gateways", headers=headers)
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    assert (
        await world.as_("A:admin", "DELETE", f"/v1/tokens/{token['id']}")
    ).status_code == 204  # idempotent


async def test_revocation_bound_when_the_broadcast_is_lost(
    world: World, database_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Revoked behind the API's back (as if the Redis message were lost): the cached token works
    until MCPQ_TOKEN_CACHE_TTL_S has passed, and not a moment after."""
    token = await world.token("A", "member")
    headers = {"Authorization": f"Bearer {token['token']}"}
    assert (await world.http.get("/v1/gateways", headers=headers)).status_code == 200

    def revoke() -> None:
        with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            conn.execute("UPDATE api_tokens SET revoked_at = now() WHERE id = %s", (token["id"],))

    await asyncio.to_thread(revoke)
    assert (await world.http.get("/v1/gateways", headers=headers)).status_code == 200
    later = cache.monotonic() + settings.token_cache_ttl_s + 0.01
    monkeypatch.setattr(cache, "monotonic", lambda: later)  # the caches' clock only, not the loop's
    assert (await world.http.get("/v1/gateways", headers=headers)).status_code == 401


async def test_expired_token_is_401(world: World) -> None:
    token = await world.token("A", "viewer", expires_in=1)
    headers = {"Authorization": f"Bearer {token['token']}"}
    assert token["expires_at"] is not None
    assert (await world.http.get("/v1/gateways", headers=headers)).status_code == 200
    await asyncio.sleep(1.1)  # the cached entry lives no longer than the token
    assert (await world.http.get("/v1/gateways", headers=headers)).status_code == 401


@pytest.mark.parametrize("secret", ["mcpq_" + "x" * 43, "not-a-token", "mcpq_"])
async def test_unknown_token_is_401(world: World, secret: str) -> None:
    response = await world.http.get("/v1/gateways", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 401


async def test_tokens_are_stored_hashed(world: World, database_url: str) -> None:
    token = await world.token("A", "viewer")
    assert token["token"].startswith("mcpq_") and token["token"].startswith(token["prefix"])

    def row() -> str:
        with psycopg.connect(libpq_url(database_url)) as conn:
            found = conn.execute(
                "SELECT row_to_json(t)::text FROM api_tokens t WHERE id = %s", (token["id"],)
            ).fetchone()
        assert found is not None
        return str(found[0])

    stored = await asyncio.to_thread(row)
    assert token["token"] not in stored


# ---- bad input is a clear 4xx ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/tokens", {"name": "t", "team": "x", "role": "owner"}),
        ("POST", "/v1/tokens", {"name": "t", "team": "x", "role": "viewer", "expires_in": 0}),
        ("POST", "/v1/teams", {"name": "Bad Name"}),
        ("POST", "/v1/teams/x/members", {"email": "not-an-email"}),
        ("POST", "/v1/gateways", {"name": "gw", "url": "http://127.0.0.1:9/mcp", "visibility": "everyone"}),
    ],
)
async def test_bad_input_is_422(world: World, method: str, path: str, body: dict[str, Any]) -> None:
    response = await world.http.request(method, path, json=body)
    assert response.status_code == 422, response.text


async def test_platform_admin_must_name_the_gateway_team(world: World) -> None:
    response = await world.http.post(
        "/v1/gateways", json={"name": unique(), "url": world.backends.urls["stateless"]}
    )
    assert response.status_code == 422 and "team" in response.json()["detail"]
