"""What crosses the gateway unchanged, driven by the official SDK `Client` (and raw JSON-RPC for
the 2025-06-18 revision, which the SDK's client does not ask for): every item field the backend
declares, per protocol revision; the capabilities a server advertises; content of every type;
JSON Schema 2020-12 tool schemas and the gateway's own argument check; completion/complete on the
owning backend; and lists that page past a thousand items.

The backend is the conformance fixture (tests/conformance/fixture_backend.py), compared with
what the same client sees when it talks to the fixture directly.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
from arq.worker import Worker
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.server.lowlevel import Server
from mcp_types import _v2025_11_25, _v2026_07_28
from pydantic import BaseModel

from api.mcp import catalog
from tests.backends import Backends, free_port
from tests.conformance.fixture_backend import FixtureBackend, ThreadedApp, every_content_result
from tests.conftest import unique

MANY = 1_200  # more tools than a server could hold before lists paged


@dataclass
class World:
    fixture: FixtureBackend
    url: str  # the virtual server's MCP endpoint (public_mcp: no token needed)
    gateway: dict[str, Any]
    team: dict[str, Any]


async def _refs(client: httpx.AsyncClient, plural: str, gateway: str) -> list[str]:
    refs: list[str] = []
    cursor: str | None = None
    while True:
        params = {"gateway": gateway, "limit": "500", **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"/v1/{plural}", params=params)).raise_for_status().json()
        refs += [i["ref" if plural == "resources" else "qualified_name"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return refs


async def _compose(client: httpx.AsyncClient, team: dict[str, Any], gateway: str, api_url: str) -> str:
    body: dict[str, Any] = {"name": unique("srv"), "team": team["id"], "public_mcp": True}
    for plural in ("tools", "resources", "prompts"):
        body[plural] = await _refs(client, plural, gateway)
    created = await client.post("/v1/servers", json=body)
    assert created.status_code == 201, created.text
    return f"{api_url}{created.json()['mcp_path']}"


@pytest.fixture(scope="module")
async def world(
    client: httpx.AsyncClient, fixture_backend: FixtureBackend, worker: Worker, api_url: str
) -> AsyncIterator[World]:
    team = (await client.post("/v1/teams", json={"name": unique("pass")})).json()
    registered = await client.post(
        "/v1/gateways", json={"name": unique(), "url": fixture_backend.url, "team": team["id"]}
    )
    assert registered.status_code == 201, registered.text
    gateway = registered.json()
    url = await _compose(client, team, gateway["name"], api_url)
    yield World(fixture=fixture_backend, url=url, gateway=gateway, team=team)
    await client.delete(f"/v1/teams/{team['id']}")


@contextlib.asynccontextmanager
async def connect(url: str, mode: str = "legacy") -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=None)) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as mcp,  # type: ignore[arg-type]
    ):
        yield mcp


def dump(model: BaseModel) -> dict[str, Any]:
    data: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data


async def listed(mcp: Client) -> dict[str, dict[str, dict[str, Any]]]:
    """Every item the client is shown, by kind and name, as JSON."""
    return {
        "tools": {t.name: dump(t) for t in (await mcp.list_tools()).tools},
        "resources": {str(r.uri): dump(r) for r in (await mcp.list_resources()).resources},
        "templates": {
            t.uri_template: dump(t) for t in (await mcp.list_resource_templates()).resource_templates
        },
        "prompts": {p.name: dump(p) for p in (await mcp.list_prompts()).prompts},
    }


# --- metadata ------------------------------------------------------------------------------------


async def test_every_item_field_passes_through(world: World) -> None:
    """2025-11-25: title, icons, annotations, _meta, outputSchema, size, prompt argument titles,
    as the backend declared them; tools also say that any call may run as a task."""
    async with connect(world.fixture.url) as direct, connect(world.url) as gateway:
        assert gateway.protocol_version == direct.protocol_version == "2025-11-25"
        expected, seen = await listed(direct), await listed(gateway)
    assert set(seen["tools"]) == set(expected["tools"]) and len(seen["tools"]) >= 15
    for name, tool in seen["tools"].items():
        declared = expected["tools"][name]
        assert tool.pop("execution") == {"taskSupport": "optional"}
        declared.pop("execution", None)
        assert tool == declared, name
    annotated = seen["tools"]["test_annotated_tool"]
    assert annotated["title"] == "An annotated tool" and annotated["icons"][0]["sizes"] == ["48x48"]
    assert annotated["_meta"] == {"com.example/fixture": {"kept": True}}
    assert annotated["annotations"]["readOnlyHint"] is True
    for kind in ("resources", "templates", "prompts"):
        assert seen[kind] == expected[kind], kind
    assert seen["resources"]["test://static-text"]["size"] == 48
    assert seen["templates"]["test://template/{id}/data"]["title"] == "Data by id"
    assert seen["prompts"]["test_prompt_with_arguments"]["arguments"][0]["title"] == "First"


async def test_the_rest_api_shows_the_same_fields(world: World, client: httpx.AsyncClient) -> None:
    gateway = world.gateway["name"]
    tool = (await client.get(f"/v1/tools/{gateway}.test_annotated_tool")).json()
    assert tool["icons"][0]["src"] == "https://example.com/icon.png"
    assert tool["meta"] == {"com.example/fixture": {"kept": True}}
    # As discovery saw it: a worker that speaks 2026-07-28 with the backend is sent no
    # `execution` (tasks are an extension there); one that speaks 2025-11-25 is.
    expected = None if world.gateway["protocol_version"] == "2026-07-28" else {"taskSupport": "optional"}
    assert tool["execution"] == expected
    resource = (await client.get(f"/v1/resources/{gateway}:test://static-text")).json()
    assert (resource["title"], resource["size"]) == ("Static text", 48)
    assert resource["annotations"] == {"audience": ["user", "assistant"], "priority": 0.8}
    prompt = (await client.get(f"/v1/prompts/{gateway}.test_prompt_with_arguments")).json()
    assert prompt["title"] == "Prompt with arguments" and prompt["icons"]
    gw = (await client.get(f"/v1/gateways/{world.gateway['id']}")).json()
    assert gw["capabilities"]["completions"] == {} and gw["capabilities"]["resources"]["subscribe"]


class Raw:
    """A 2025-06-18 client in raw JSON-RPC (the SDK's client always asks for the latest)."""

    def __init__(self, http: httpx.AsyncClient, url: str, version: str) -> None:
        self.http, self.url, self.version = http, url, version
        self.session: str | None = None
        self.id = 0

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.id += 1
        headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": self.version}
        if self.session:
            headers["Mcp-Session-Id"] = self.session
        body = {"jsonrpc": "2.0", "id": self.id, "method": method, "params": params or {}}
        response = await self.http.post(self.url, json=body, headers=headers)
        assert response.status_code == 200, response.text
        self.session = response.headers.get("mcp-session-id", self.session)
        for line in response.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                message: dict[str, Any] = json.loads(line[5:])
                if message.get("id") == self.id:
                    return message
        raise AssertionError(f"no answer in {response.text!r}")

    async def open(self) -> dict[str, Any]:
        info = {"name": "raw", "version": "1"}
        init = await self.request(
            "initialize", {"protocolVersion": self.version, "capabilities": {}, "clientInfo": info}
        )
        headers = {"Mcp-Session-Id": self.session or "", "MCP-Protocol-Version": self.version}
        await self.http.post(
            self.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers
        )
        return init


async def test_a_2025_06_18_client_gets_only_its_revisions_fields(world: World) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        raw = Raw(http, world.url, "2025-06-18")
        assert (await raw.open())["result"]["protocolVersion"] == "2025-06-18"
        tools = {t["name"]: t for t in (await raw.request("tools/list"))["result"]["tools"]}
        resources = (await raw.request("resources/list"))["result"]["resources"]
        prompts = (await raw.request("prompts/list"))["result"]["prompts"]
    annotated = tools["test_annotated_tool"]
    # No tasks and no icons in 2025-06-18; title, _meta, annotations and outputSchema are its own.
    assert "execution" not in annotated and "icons" not in annotated
    assert annotated["title"] == "An annotated tool" and annotated["_meta"] and annotated["outputSchema"]
    assert all("execution" not in t for t in tools.values())
    text = next(r for r in resources if r["uri"] == "test://static-text")
    assert "icons" not in text and text["title"] == "Static text" and text["size"] == 48
    assert all("icons" not in p for p in prompts)


async def test_a_2026_07_28_client_gets_icons_but_no_task_execution(world: World) -> None:
    async with connect(world.url, mode="auto") as mcp:
        assert mcp.protocol_version == "2026-07-28"
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
    # Tasks are an extension in 2026-07-28: no `execution` on tools.
    assert all(t.execution is None for t in tools.values())
    assert tools["test_annotated_tool"].icons and tools["test_annotated_tool"].title


def wire_fields(model: type[BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


@pytest.mark.parametrize("version", ["2025-11-25", "2026-07-28"])
async def test_items_have_only_their_revisions_fields(world: World, version: str) -> None:
    """Checked against the SDK's own types of each revision (mcp_types._v2025_11_25, _v2026_07_28)."""
    schema = _v2025_11_25 if version == "2025-11-25" else _v2026_07_28
    async with connect(world.url, mode="legacy" if version == "2025-11-25" else version) as mcp:
        assert mcp.protocol_version == version
        seen = await listed(mcp)
    for kind, model in (
        ("tools", schema.Tool),
        ("resources", schema.Resource),
        ("templates", schema.ResourceTemplate),
        ("prompts", schema.Prompt),
    ):
        for item in seen[kind].values():
            assert set(item) <= wire_fields(model), (kind, set(item) - wire_fields(model))
    # Every field the revision defines for an item arrives when the backend declared it.
    assert set(seen["tools"]["test_annotated_tool"]) == wire_fields(schema.Tool)
    assert set(seen["resources"]["test://static-text"]) == wire_fields(schema.Resource)
    assert set(seen["templates"]["test://template/{id}/data"]) == wire_fields(schema.ResourceTemplate)
    assert set(seen["prompts"]["test_prompt_with_arguments"]) == wire_fields(schema.Prompt)


def test_fields_by_revision() -> None:
    fields = {"title": "t", "icons": [1], "execution": {}, "_meta": {}, "size": 3, "description": None}
    assert catalog.for_revision(fields, "2025-03-26") == {"size": 3}
    assert catalog.for_revision(fields, "2025-06-18") == {"title": "t", "_meta": {}, "size": 3}
    assert set(catalog.for_revision(fields, "2025-11-25")) == {"title", "icons", "execution", "_meta", "size"}
    assert set(catalog.for_revision(fields, "2026-07-28")) == {"title", "icons", "_meta", "size"}
    assert catalog.for_revision(fields, "not-a-revision") == {"size": 3}


# --- capabilities --------------------------------------------------------------------------------


def _served(method: str, world_server: Server[Any]) -> bool:
    return world_server.get_request_handler(method) is not None


async def test_capabilities_follow_the_backends(
    world: World, client: httpx.AsyncClient, backends: Backends, api_url: str, app: Any
) -> None:
    """completions where a backend completes; logging and subscribe only once the front door
    serves them (a relay registers the handler) and a backend has them."""
    front = app.state.mcp.front.server
    async with connect(world.fixture.url) as direct, connect(world.url) as gateway:
        backend_caps, caps = direct.server_capabilities, gateway.server_capabilities
    assert backend_caps.completions is not None and caps.completions is not None
    assert (caps.logging is not None) == _served("logging/setLevel", front)
    assert caps.resources is not None
    assert caps.resources.subscribe == _served("resources/subscribe", front)
    async with connect(world.url, mode="auto") as modern:
        assert modern.server_capabilities.completions is not None

    # A server whose only backend (tests/backends.py, an MCPServer) completes nothing.
    other = (await client.post("/v1/teams", json={"name": unique("caps")})).json()
    try:
        made = await client.post(
            "/v1/gateways", json={"name": "plain", "url": backends.urls["stateful"], "team": other["id"]}
        )
        assert made.status_code == 201, made.text
        async with connect(await _compose(client, other, "plain", api_url)) as mcp:
            assert mcp.server_capabilities.completions is None
            assert mcp.server_capabilities.logging is None
            # Asked anyway: the backend answers -32601, the client gets no suggestions.
            asked = await mcp.complete(
                types.PromptReference(type="ref/prompt", name="greet"), {"name": "name", "value": "A"}
            )
            assert asked.completion.values == []
    finally:
        await client.delete(f"/v1/teams/{other['id']}")


def test_capabilities_are_what_is_served_and_what_a_backend_has() -> None:
    served = types.ServerCapabilities(
        completions=types.CompletionsCapability(),
        logging=types.LoggingCapability(),
        resources=types.ResourcesCapability(subscribe=True, list_changed=False),
    )
    none = catalog.capabilities(served, [{"tools": {}}])
    assert none.completions is None and none.logging is None and none.resources is not None
    assert none.resources.subscribe is False
    some = catalog.capabilities(
        served, [{"tools": {}}, {"completions": {}, "resources": {"subscribe": True}}]
    )
    assert some.completions is not None and some.logging is None
    assert some.resources is not None and some.resources.subscribe is True
    # What the front door does not serve is never advertised, whatever the backends have.
    bare = catalog.capabilities(types.ServerCapabilities(), [{"logging": {}, "completions": {}}])
    assert bare.logging is None and bare.completions is None


# --- content and schemas -------------------------------------------------------------------------


async def test_every_content_type_crosses_the_queue_unchanged(world: World) -> None:
    async with connect(world.fixture.url) as direct, connect(world.url) as gateway:
        expected = dump(await direct.call_tool("test_every_content_type", {}))
        through = dump(await gateway.call_tool("test_every_content_type", {}))
        mixed = dump(await gateway.call_tool("test_multiple_content_types", {}))
        image = await gateway.get_prompt("test_prompt_with_image")
        embedded = await gateway.get_prompt("test_prompt_with_embedded_resource", {"resourceUri": "test://x"})
        binary = await gateway.read_resource("test://static-binary")
    assert through == expected == dump(every_content_result())
    types_seen = [c["type"] for c in through["content"]]
    assert types_seen == ["text", "image", "audio", "resource", "resource", "resource_link"]
    assert through["structuredContent"] == {"n": 1} and through["_meta"]
    assert [c["type"] for c in mixed["content"]] == ["text", "image", "resource"]
    assert image.messages[0].content.type == "image"
    assert embedded.messages[0].content.resource.uri == "test://x"  # type: ignore[union-attr]
    assert binary.contents[0].blob  # type: ignore[union-attr]


async def test_json_schema_2020_12_is_served_verbatim_and_checked(world: World) -> None:
    async with connect(world.fixture.url) as direct, connect(world.url) as gateway:
        declared = next(t for t in (await direct.list_tools()).tools if t.name == "json_schema_2020_12_tool")
        served = next(t for t in (await gateway.list_tools()).tools if t.name == "json_schema_2020_12_tool")
        good = await gateway.call_tool(
            "json_schema_2020_12_tool", {"name": "Ada", "address": {"street": "1 Main", "city": "X"}}
        )
        # `$ref` into `$defs`: a city that is not a string is refused before the queue.
        bad_ref = await gateway.call_tool("json_schema_2020_12_tool", {"address": {"city": 3}})
        # additionalProperties: false.
        extra = await gateway.call_tool("json_schema_2020_12_tool", {"name": "Ada", "age": 3})
    assert served.input_schema == declared.input_schema
    assert served.input_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert good.is_error is False
    assert json.loads(good.content[0].text)["address"]["city"] == "X"  # type: ignore[union-attr]
    assert bad_ref.is_error and "3 is not of type 'string'" in bad_ref.content[0].text  # type: ignore[union-attr]
    assert extra.is_error and "age" in extra.content[0].text  # type: ignore[union-attr]


# --- completion ----------------------------------------------------------------------------------


async def test_completion_runs_on_the_owning_backend(world: World, client: httpx.AsyncClient) -> None:
    prompt = types.PromptReference(type="ref/prompt", name="test_prompt_with_arguments")
    template = types.ResourceTemplateReference(type="ref/resource", uri="test://template/{id}/data")
    async with connect(world.fixture.url) as direct, connect(world.url) as gateway:
        for ref, argument in (
            (prompt, {"name": "arg1", "value": "par"}),
            (template, {"name": "id", "value": "4"}),
        ):
            expected = await direct.complete(ref, argument, {"arg2": "x"})
            seen = await gateway.complete(ref, argument, {"arg2": "x"})
            assert dump(seen) == dump(expected) and seen.completion.values
        assert (await gateway.complete(prompt, {"name": "arg1", "value": "par"})).completion.values == [
            "paris",
            "park",
            "party",
        ]
        with pytest.raises(MCPError) as unknown_argument:
            await gateway.complete(prompt, {"name": "nope", "value": ""})
        with pytest.raises(MCPError) as unknown_prompt:
            await gateway.complete(
                types.PromptReference(type="ref/prompt", name="nope"), {"name": "a", "value": ""}
            )
        with pytest.raises(MCPError) as not_a_template:
            await gateway.complete(
                types.ResourceTemplateReference(type="ref/resource", uri="test://static-text"),
                {"name": "id", "value": ""},
            )
    assert unknown_argument.value.code == types.INVALID_PARAMS
    assert "no argument 'nope'" in unknown_argument.value.message
    assert unknown_prompt.value.code == types.INVALID_PARAMS
    assert not_a_template.value.code == types.INVALID_PARAMS
    # Each completion was a job, visible like any other.
    jobs = (await client.get("/v1/jobs", params={"team": world.team["id"]})).json()
    assert any(j["kind"] == "complete" for j in jobs["items"]), jobs


# --- paging --------------------------------------------------------------------------------------


def many_tools_server() -> Server[Any]:
    """A backend with MANY tools, which it lists 400 at a time."""
    tools = [
        types.Tool(name=f"tool_{i:04d}", description=f"tool {i}", input_schema={"type": "object"})
        for i in range(MANY)
    ]

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams) -> types.ListToolsResult:
        start = int(params.cursor or 0)
        following = str(start + 400) if start + 400 < MANY else None
        return types.ListToolsResult(tools=tools[start : start + 400], next_cursor=following)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        return types.CallToolResult(content=[types.TextContent(type="text", text=params.name)])

    return Server("many", on_list_tools=list_tools, on_call_tool=call_tool)


@pytest.fixture(scope="module")
def many_backend() -> Iterator[str]:
    served = ThreadedApp(many_tools_server().streamable_http_app(), free_port())
    served.start()
    yield served.url
    served.stop()


async def test_every_list_pages_with_cursors(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two items a page: following the cursors gives each list whole, in order, no repeats."""
    monkeypatch.setattr(catalog, "PAGE_SIZE", 2)  # the API runs in this process
    async with connect(world.fixture.url) as direct, connect(world.url) as gateway:
        expected = await listed(direct)
        pages: dict[str, list[str]] = {}
        for kind, method, attr, key in (
            ("tools", gateway.list_tools, "tools", "name"),
            ("resources", gateway.list_resources, "resources", "uri"),
            ("templates", gateway.list_resource_templates, "resource_templates", "uri_template"),
            ("prompts", gateway.list_prompts, "prompts", "name"),
        ):
            cursor: str | None = None
            pages[kind] = []
            while True:
                page = await method(cursor=cursor)  # type: ignore[operator]
                found = getattr(page, attr)
                assert len(found) <= 2
                pages[kind] += [str(getattr(item, key)) for item in found]
                cursor = page.next_cursor
                if cursor is None:
                    break
    for kind, names in pages.items():
        assert len(names) == len(set(names)) and set(names) == set(expected[kind]), kind
    assert len(pages["resources"]) == 3 and len(pages["templates"]) == 1


async def test_lists_page_past_a_thousand_items(
    client: httpx.AsyncClient, many_backend: str, worker: Worker, api_url: str
) -> None:
    team = (await client.post("/v1/teams", json={"name": unique("many")})).json()
    try:
        made = await client.post(
            "/v1/gateways", json={"name": "many", "url": many_backend, "team": team["id"]}
        )
        assert made.status_code == 201, made.text
        assert made.json()["tool_count"] == MANY
        url = await _compose(client, team, "many", api_url)
        async with connect(url) as mcp:
            first = await mcp.list_tools()
            assert len(first.tools) == catalog.PAGE_SIZE and first.next_cursor
            names = [t.name for t in first.tools]
            cursor = first.next_cursor
            while cursor:
                page = await mcp.list_tools(cursor=cursor)
                names += [t.name for t in page.tools]
                cursor = page.next_cursor
            assert names == [f"tool_{i:04d}" for i in range(MANY)]
            assert (await mcp.call_tool("tool_1199", {})).content[0].text == "tool_1199"  # type: ignore[union-attr]
            with pytest.raises(MCPError) as bad:
                await mcp.list_tools(cursor="not-a-cursor")
            assert bad.value.code == types.INVALID_PARAMS
    finally:
        await client.delete(f"/v1/teams/{team['id']}")
