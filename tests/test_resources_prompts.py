"""Resources and prompts over REST: the catalog (list, pagination, show) and reads and renders
through a worker, synchronous and as jobs."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import httpx

from tests.backends import LOGO_BYTES

RESOURCE_FIELDS = {
    "id",
    "ref",
    "uri",
    "is_template",
    "name",
    "description",
    "mime_type",
    "gateway",
    "gateway_id",
    "title",
    "size",
    "annotations",
    "icons",
    "meta",
}


async def _resources(client: httpx.AsyncClient, gateway: str) -> dict[str, dict[str, Any]]:
    response = await client.get("/v1/resources", params={"gateway": gateway})
    assert response.status_code == 200, response.text
    return {r["uri"]: r for r in response.json()["items"]}


# --- resources: catalog ------------------------------------------------------------------------


async def test_list_resources_with_templates(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    items = await _resources(client, gateway["name"])
    assert set(items) == {
        "demo://readme",
        "demo://logo.png",
        "test://watched-resource",
        "demo://items/{item}",
    }
    for item in items.values():
        assert set(item) == RESOURCE_FIELDS
        assert item["ref"] == f"{gateway['name']}:{item['uri']}"
    assert items["demo://items/{item}"]["is_template"] is True
    assert items["demo://readme"]["is_template"] is False
    assert items["demo://logo.png"]["mime_type"] == "image/png"


async def test_resources_paginate(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"gateway": gateway["name"], "limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/resources", params=params)).json()
        seen += [r["uri"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == 4
    assert (await client.get("/v1/resources", params={"cursor": "!!"})).status_code == 400
    assert (await client.get("/v1/resources", params={"limit": 0})).status_code == 422


async def test_get_resource_by_ref_and_id(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    by_ref = await client.get(f"/v1/resources/{gateway['name']}:demo://readme")
    assert by_ref.status_code == 200, by_ref.text
    by_id = await client.get(f"/v1/resources/{by_ref.json()['id']}")
    assert by_id.json() == by_ref.json()
    encoded = await client.get(f"/v1/resources/{quote(gateway['name'] + ':demo://readme', safe='')}")
    assert encoded.status_code == 200
    for missing in ("nope:demo://readme", f"{gateway['name']}:demo://missing", "no-colon", str(uuid4())):
        response = await client.get(f"/v1/resources/{missing}")
        assert response.status_code == 404, missing
        assert response.json()["error"] == "not_found"


def uuid4() -> str:
    import uuid

    return str(uuid.uuid4())


# --- resources: reads --------------------------------------------------------------------------


async def test_read_text_resource(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    response = await client.post(f"/v1/resources/{gateway['name']}:demo://readme/read", json={})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    (content,) = body["result"]["contents"]
    assert content == {"uri": "demo://readme", "mimeType": "text/plain", "text": "hello from a resource"}
    job = (await client.get(f"/v1/jobs/{body['job_id']}")).json()
    assert job["kind"] == "read_resource"
    assert job["item"] == f"{gateway['name']}:demo://readme"


async def test_read_binary_resource_is_base64(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    response = await client.post(f"/v1/resources/{gateway['name']}:demo://logo.png/read", json={})
    assert response.status_code == 200, response.text
    (content,) = response.json()["result"]["contents"]
    assert content["mimeType"] == "image/png"
    assert base64.b64decode(content["blob"]) == LOGO_BYTES


async def test_read_template_needs_a_matching_uri(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    ref = f"{gateway['name']}:demo://items/{{item}}"
    read = await client.post(f"/v1/resources/{quote(ref, safe=':/')}/read", json={"uri": "demo://items/42"})
    assert read.status_code == 200, read.text
    assert read.json()["result"]["contents"][0]["text"] == "item 42"
    for body in ({}, {"uri": "demo://other/42"}, {"uri": "demo://items/4/2"}):
        refused = await client.post(f"/v1/resources/{quote(ref, safe=':/')}/read", json=body)
        assert refused.status_code == 422, (body, refused.text)
        assert refused.json()["error"] == "validation_error"
    plain = await client.post(
        f"/v1/resources/{gateway['name']}:demo://readme/read", json={"uri": "demo://other"}
    )
    assert plain.status_code == 422


async def test_read_resource_as_a_job(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    submitted = await client.post(f"/v1/resources/{gateway['name']}:demo://readme/jobs", json={})
    assert submitted.status_code == 202, submitted.text
    assert submitted.headers["location"] == f"/v1/jobs/{submitted.json()['job_id']}"
    done = await client.get(submitted.headers["location"], params={"wait": 10})
    assert done.json()["status"] == "completed"
    assert done.json()["result"]["contents"][0]["text"] == "hello from a resource"


async def test_read_resource_bad_input(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    base = f"/v1/resources/{gateway['name']}:demo://readme"
    assert (await client.post(f"{base}/read", json={"bogus": 1})).status_code == 422
    assert (await client.post(f"{base}/read", json={"timeout_s": 0})).status_code == 422
    assert (await client.post(f"{base}/read", json={"timeout_s": 10_000})).status_code == 422
    assert (await client.post(f"{base}/jobs", json={"uri": ""})).status_code == 422
    assert (await client.post("/v1/resources/nope:demo://x/read", json={})).status_code == 404
    assert (await client.post("/v1/resources/nope:demo://x/jobs", json={})).status_code == 404


# --- prompts -----------------------------------------------------------------------------------


async def test_list_and_get_prompts(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    listed = await client.get("/v1/prompts", params={"gateway": gateway["name"]})
    assert listed.status_code == 200, listed.text
    (prompt,) = listed.json()["items"]
    assert prompt["name"] == "greet"
    assert prompt["qualified_name"] == f"{gateway['name']}.greet"
    assert prompt["arguments"][0]["name"] == "name"
    assert prompt["arguments"][0]["required"] is True
    shown = await client.get(f"/v1/prompts/{prompt['id']}")
    assert shown.json() == prompt
    assert (await client.get(f"/v1/prompts/{gateway['name']}.greet")).json() == prompt
    for missing in ("nope.greet", f"{gateway['name']}.nope", "nodot", uuid4()):
        assert (await client.get(f"/v1/prompts/{missing}")).status_code == 404
    assert (await client.get("/v1/prompts", params={"cursor": "x"})).status_code == 400


async def test_render_prompt(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    response = await client.post(
        f"/v1/prompts/{gateway['name']}.greet/render", json={"arguments": {"name": "Ada"}}
    )
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["messages"][0]["role"] == "user"
    assert result["messages"][0]["content"]["text"] == "Hello Ada"


async def test_render_checks_arguments_before_enqueueing(
    client: httpx.AsyncClient, gateway: dict[str, Any], app: Any, settings: Any
) -> None:
    redis = app.state.ctx.queue.redis
    before = len(await redis.keys(settings.key("job", "*")))
    url = f"/v1/prompts/{gateway['name']}.greet/render"
    missing = await client.post(url, json={"arguments": {}})
    assert missing.status_code == 422
    assert missing.json()["error"] == "invalid_arguments"
    assert missing.json()["missing"] == ["name"]
    unknown = await client.post(url, json={"arguments": {"name": "x", "extra": "y"}})
    assert unknown.status_code == 422
    assert unknown.json()["unknown"] == ["extra"]
    assert (await client.post(url, json={"arguments": {"name": 3}})).status_code == 422
    assert (await client.post(url, json={"arguments": [], "x": 1})).status_code == 422
    jobs = f"/v1/prompts/{gateway['name']}.greet/jobs"
    assert (await client.post(jobs, json={"arguments": {}})).status_code == 422
    assert len(await redis.keys(settings.key("job", "*"))) == before


async def test_render_prompt_as_a_job(client: httpx.AsyncClient, gateway: dict[str, Any]) -> None:
    submitted = await client.post(
        f"/v1/prompts/{gateway['name']}.greet/jobs", json={"arguments": {"name": "Bo"}}
    )
    assert submitted.status_code == 202, submitted.text
    done = (await client.get(submitted.headers["location"], params={"wait": 10})).json()
    assert done["status"] == "completed"
    assert done["kind"] == "get_prompt"
    assert done["result"]["messages"][0]["content"]["text"] == "Hello Bo"
    assert (await client.post("/v1/prompts/nope.greet/jobs", json={})).status_code == 404
