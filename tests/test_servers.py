"""Virtual servers over REST: compose items from several gateways, update, delete, and what a
gateway's deletion does to them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from arq.worker import Worker

from tests.backends import Backends
from tests.conftest import TEAM, unique


@pytest.fixture
async def two_gateways(
    client: httpx.AsyncClient, backends: Backends, worker: Worker
) -> AsyncIterator[tuple[dict[str, Any], dict[str, Any]]]:
    made = []
    for kind in ("stateful", "stateless"):
        response = await client.post(
            "/v1/gateways", json={"name": unique(), "url": backends.urls[kind], "team": TEAM}
        )
        assert response.status_code == 201, response.text
        made.append(response.json())
    yield made[0], made[1]
    for gateway in made:
        await client.delete(f"/v1/gateways/{gateway['id']}")


async def test_server_lifecycle(
    client: httpx.AsyncClient, two_gateways: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    a, b = two_gateways
    body = {
        "name": unique("srv"),
        "team": TEAM,
        "tools": [f"{a['name']}.echo", f"{b['name']}.add"],
        "resources": [f"{a['name']}:demo://readme", f"{b['name']}:demo://items/{{item}}"],
        "prompts": [f"{b['name']}.greet"],
    }
    created = await client.post("/v1/servers", json=body)
    assert created.status_code == 201, created.text
    server = created.json()
    assert server["public_mcp"] is False
    assert server["mcp_path"] == f"/v1/servers/{server['id']}/mcp"
    assert [t["name"] for t in server["tools"]] == ["echo", "add"]
    assert [t["gateway_id"] for t in server["tools"]] == [a["id"], b["id"]]
    assert [r["uri"] for r in server["resources"]] == ["demo://readme", "demo://items/{item}"]
    assert [p["qualified_name"] for p in server["prompts"]] == [f"{b['name']}.greet"]

    assert (await client.get(f"/v1/servers/{server['id']}")).json() == server
    listed = (await client.get("/v1/servers")).json()["items"]
    assert server["id"] in {s["id"] for s in listed}

    tool_id = server["tools"][0]["id"]
    patched = await client.patch(
        f"/v1/servers/{server['id']}", json={"tools": [tool_id], "public_mcp": True, "description": "d"}
    )
    assert patched.status_code == 200, patched.text
    assert [t["id"] for t in patched.json()["tools"]] == [tool_id]
    assert patched.json()["public_mcp"] is True
    assert patched.json()["description"] == "d"
    assert len(patched.json()["resources"]) == 2  # not named in the patch: unchanged

    # Deleting a gateway removes its items from the server.
    await client.delete(f"/v1/gateways/{a['id']}")
    after = (await client.get(f"/v1/servers/{server['id']}")).json()
    assert after["tools"] == []
    assert [r["uri"] for r in after["resources"]] == ["demo://items/{item}"]

    assert (await client.delete(f"/v1/servers/{server['id']}")).status_code == 204
    assert (await client.get(f"/v1/servers/{server['id']}")).status_code == 404
    assert (await client.delete(f"/v1/servers/{server['id']}")).status_code == 404


async def test_server_bad_input(
    client: httpx.AsyncClient, two_gateways: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    a, b = two_gateways
    name = unique("srv")

    async def create(**body: Any) -> httpx.Response:
        return await client.post("/v1/servers", json={"name": name, "team": TEAM, **body})

    for body in (
        {"tools": [f"{a['name']}.nope"]},
        {"tools": ["no-dot"]},
        {"tools": [str(uuid.uuid4())]},
        {"resources": [f"{a['name']}:demo://nope"]},
        {"prompts": [f"{a['name']}.nope"]},
        # the same name twice, from two gateways: MCP clients could not tell them apart
        {"tools": [f"{a['name']}.echo", f"{b['name']}.echo"]},
        {"resources": [f"{a['name']}:demo://readme", f"{b['name']}:demo://readme"]},
        {"public_mcp": "yes"},
        {"bogus": 1},
    ):
        response = await create(**body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"] == "validation_error"
    bad_name = await client.post("/v1/servers", json={"name": "Bad Name", "team": TEAM})
    assert bad_name.status_code == 422
    no_team = await client.post("/v1/servers", json={"name": name})
    assert no_team.status_code == 422  # the platform admin must name the team
    assert (await client.post("/v1/servers", json={"name": name, "team": "nope"})).status_code == 404

    first = await create(tools=[f"{a['name']}.echo", f"{a['name']}.echo"])
    assert first.status_code == 201, first.text
    assert len(first.json()["tools"]) == 1  # a repeated ref is one item
    assert (await create()).status_code == 409
    other = await client.post("/v1/servers", json={"name": unique("srv"), "team": TEAM})
    taken = await client.patch(f"/v1/servers/{other.json()['id']}", json={"name": name})
    assert taken.status_code == 409
    assert (
        await client.patch(f"/v1/servers/{other.json()['id']}", json={"tools": ["x.y"]})
    ).status_code == 422
    for missing in ("nope", str(uuid.uuid4())):
        assert (await client.get(f"/v1/servers/{missing}")).status_code == 404
        assert (await client.patch(f"/v1/servers/{missing}", json={})).status_code == 404
        assert (await client.delete(f"/v1/servers/{missing}")).status_code == 404
    for server in (first.json(), other.json()):
        await client.delete(f"/v1/servers/{server['id']}")
