"""The conformance fixture backend: every tool, resource, template, prompt, completion, logging
level and subscription that the server scenarios of @modelcontextprotocol/conformance 0.1.16 call,
plus items that carry every piece of metadata MCP defines (title, icons, annotations, _meta,
execution, size), so the gateway's pass-through can be checked against it.

Built on the SDK's low-level `Server`, so each item is declared as data exactly as it goes on the
wire (a tool's JSON Schema 2020-12 input schema is served verbatim).

    python -m tests.conformance.fixture_backend --port P     # streamable HTTP at /mcp
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import threading
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import mcp.types as types
import uvicorn
from mcp.server.lowlevel import Server
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp.types import JSONRPCMessage
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel
from starlette.applications import Starlette

# A 1x1 red PNG and a 1-sample WAV: the smallest valid files of each kind.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
WAV = base64.b64decode("UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQIAAACAgA==")
PNG_B64 = base64.b64encode(PNG).decode()
WAV_B64 = base64.b64encode(WAV).decode()

ICON = types.Icon(src="https://example.com/icon.png", mime_type="image/png", sizes=["48x48"])
META = {"com.example/fixture": {"kept": True}}
SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}
NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}}
LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
COMPLETIONS = ["paris", "park", "party", "test-one", "test-two"]


def _text(text: str) -> list[types.ContentBlock]:
    return [types.TextContent(type="text", text=text)]


def _string_args(*names: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": "string"} for name in names},
        "required": list(names),
    }


Ctx = Any  # ServerRequestContext[Any, Any]
AnswerT = TypeVar("AnswerT", bound=BaseModel)
Handler = Callable[[Ctx, dict[str, Any]], Awaitable[types.CallToolResult]]


@dataclass
class Fixture:
    """The backend's state: log level per session and subscriptions (for tests to inspect)."""

    subscribed: set[str] = field(default_factory=set)
    log_levels: dict[int, str] = field(default_factory=dict)
    # subscriptions/listen (2026-07-28): publish ResourceUpdated, ToolsListChanged... on it.
    bus: InMemorySubscriptionBus = field(default_factory=InMemorySubscriptionBus)
    tools: dict[str, tuple[types.Tool, Handler]] = field(default_factory=dict)

    def tool(self, tool: types.Tool) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.tools[tool.name] = (tool, handler)
            return handler

        return register

    async def log(self, ctx: Ctx, level: str, message: str) -> None:
        threshold = self.log_levels.get(id(ctx.session), "debug")
        if LEVELS.index(level) >= LEVELS.index(threshold):
            # send_notification, not the deprecated send_log_message (a warning is an error
            # under pytest, and this runs in the test process).
            params = types.LoggingMessageNotificationParams(level=level, data=message, logger="fixture")
            await ctx.session.send_notification(
                types.LoggingMessageNotification(params=params), related_request_id=ctx.request_id
            )


def _content_tools(f: Fixture) -> None:
    @f.tool(types.Tool(name="test_simple_text", description="Simple text", input_schema=NO_ARGS))
    async def simple_text(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
        return types.CallToolResult(content=_text("This is a simple text response for testing."))

    @f.tool(types.Tool(name="test_image_content", description="An image", input_schema=NO_ARGS))
    async def image(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
        return types.CallToolResult(
            content=[types.ImageContent(type="image", data=PNG_B64, mime_type="image/png")]
        )

    @f.tool(types.Tool(name="test_audio_content", description="Audio", input_schema=NO_ARGS))
    async def audio(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
        return types.CallToolResult(
            content=[types.AudioContent(type="audio", data=WAV_B64, mime_type="audio/wav")]
        )

    @f.tool(types.Tool(name="test_embedded_resource", description="Embedded", input_schema=NO_ARGS))
    async def embedded(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
        resource = types.TextResourceContents(
            uri="test://embedded-resource",
            mime_type="text/plain",
            text="This is an embedded resource content.",
        )
        return types.CallToolResult(content=[types.EmbeddedResource(type="resource", resource=resource)])

    @f.tool(types.Tool(name="test_multiple_content_types", description="Mixed", input_schema=NO_ARGS))
    async def mixed(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
        resource = types.TextResourceContents(
            uri="test://mixed-content-resource",
            mime_type="application/json",
            text='{"test":"data","value":123}',
        )
        return types.CallToolResult(
            content=[
                *_text("Multiple content types test:"),
                types.ImageContent(type="image", data=PNG_B64, mime_type="image/png"),
                types.EmbeddedResource(type="resource", resource=resource),
            ]
        )

    @f.tool(
        types.Tool(
            name="test_every_content_type",
            title="Every content type",
            description="Text, image, audio, embedded text and blob, a resource link, structured "
            "content and _meta, each with annotations",
            input_schema=NO_ARGS,
            output_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
        )
    )
    async def every(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
        return every_content_result()

    @f.tool(types.Tool(name="json_schema_2020_12_tool", description="2020-12", input_schema=SCHEMA_2020_12))
    async def schema_tool(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
        return types.CallToolResult(content=_text(json.dumps(args, sort_keys=True)))

    @f.tool(types.Tool(name="test_error_handling", description="Always fails", input_schema=NO_ARGS))
    async def error(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
        return types.CallToolResult(
            content=_text("This tool intentionally returns an error for testing"), is_error=True
        )


def every_content_result() -> types.CallToolResult:
    """One result with every content type and every optional field MCP 2025-11-25 defines."""
    note = types.Annotations(audience=["user"], priority=0.5, last_modified="2026-01-01T00:00:00Z")
    blob = types.BlobResourceContents(
        uri="test://blob", mime_type="application/octet-stream", blob=WAV_B64, meta=META
    )
    return types.CallToolResult(
        content=[
            types.TextContent(type="text", text="text", annotations=note, meta=META),
            types.ImageContent(type="image", data=PNG_B64, mime_type="image/png", annotations=note),
            types.AudioContent(type="audio", data=WAV_B64, mime_type="audio/wav", meta=META),
            types.EmbeddedResource(
                type="resource",
                resource=types.TextResourceContents(uri="test://t", mime_type="text/plain", text="t"),
                annotations=note,
            ),
            types.EmbeddedResource(type="resource", resource=blob),
            types.ResourceLink(
                type="resource_link",
                uri="test://static-text",
                name="static-text",
                title="Static text",
                description="a link",
                mime_type="text/plain",
                size=48,
                icons=[ICON],
                annotations=note,
                meta=META,
            ),
        ],
        structured_content={"n": 1},
        meta=META,
    )


def _interactive_tools(f: Fixture) -> None:
    @f.tool(types.Tool(name="test_tool_with_logging", description="Logs", input_schema=NO_ARGS))
    async def logging_tool(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
        await f.log(ctx, "info", "Tool execution started")
        await asyncio.sleep(0.05)
        await f.log(ctx, "info", "Tool processing data")
        await asyncio.sleep(0.05)
        await f.log(ctx, "info", "Tool execution completed")
        return types.CallToolResult(content=_text("Tool with logging executed successfully"))

    @f.tool(types.Tool(name="test_tool_with_progress", description="Progress", input_schema=NO_ARGS))
    async def progress(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
        for step in (0, 50, 100):
            await ctx.session.report_progress(step, 100, f"step {step}")
            if step < 100:
                await asyncio.sleep(0.05)
        return types.CallToolResult(content=_text("Tool with progress executed successfully"))

    @f.tool(types.Tool(name="test_sampling", description="Samples", input_schema=_string_args("prompt")))
    async def sampling(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
        message = types.SamplingMessage(
            role="user", content=types.TextContent(type="text", text=args["prompt"])
        )
        request = types.CreateMessageRequest(
            params=types.CreateMessageRequestParams(messages=[message], max_tokens=100)
        )
        answer = await _ask(ctx, request, types.CreateMessageResult)
        text = answer.content.text if isinstance(answer.content, types.TextContent) else str(answer)
        return types.CallToolResult(content=_text(f"LLM response: {text}"))

    @f.tool(types.Tool(name="test_elicitation", description="Asks", input_schema=_string_args("message")))
    async def elicitation(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
        schema = {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        }
        answer = await _ask(ctx, _elicit_request(args["message"], schema), types.ElicitResult)
        return types.CallToolResult(
            content=_text(f"User response: action={answer.action}, content={json.dumps(answer.content)}")
        )

    @f.tool(
        types.Tool(name="test_elicitation_sep1034_defaults", description="Defaults", input_schema=NO_ARGS)
    )
    async def defaults(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
        schema = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "default": "John Doe"},
                "age": {"type": "integer", "default": 30},
                "score": {"type": "number", "default": 95.5},
                "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
                "verified": {"type": "boolean", "default": True},
            },
        }
        return await _elicit(ctx, "Please review your details", schema)

    @f.tool(types.Tool(name="test_elicitation_sep1330_enums", description="Enums", input_schema=NO_ARGS))
    async def enums(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
        titled = [{"const": f"value{i}", "title": t} for i, t in enumerate(("First", "Second", "Third"), 1)]
        schema = {
            "type": "object",
            "properties": {
                "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                "titledSingle": {"type": "string", "oneOf": titled},
                "legacyEnum": {
                    "type": "string",
                    "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"],
                },
                "untitledMulti": {
                    "type": "array",
                    "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                },
                "titledMulti": {"type": "array", "items": {"anyOf": titled}},
            },
        }
        return await _elicit(ctx, "Pick options", schema)

    @f.tool(types.Tool(name="test_reconnection", description="Closes its SSE stream", input_schema=NO_ARGS))
    async def reconnection(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
        if ctx.close_sse_stream is not None:
            await ctx.close_sse_stream()
        await asyncio.sleep(0.2)
        return types.CallToolResult(content=_text("Reconnection test completed"))


# The answers a 2026-07-28 client sent with its retry of the current tools/call (SEP-2322).
_input_responses: ContextVar[dict[str, Any] | None] = ContextVar("input_responses", default=None)
ASK_KEY = "ask"  # each interactive tool asks one question


class _InputRequired(Exception):
    """A question for a 2026-07-28 client: the call answers with an InputRequiredResult."""

    def __init__(self, request: types.ElicitRequest | types.CreateMessageRequest) -> None:
        self.request = request


def _elicit_request(message: str, schema: dict[str, Any]) -> types.ElicitRequest:
    return types.ElicitRequest(params=types.ElicitRequestFormParams(message=message, requested_schema=schema))


async def _ask(
    ctx: Ctx, request: types.ElicitRequest | types.CreateMessageRequest, result_type: type[AnswerT]
) -> AnswerT:
    """Ask the client: a server-to-client request on the call's stream before 2026-07-28; from
    2026-07-28, which has none, an InputRequiredResult whose answer comes with the retry."""
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        answered = (_input_responses.get() or {}).get(ASK_KEY)
        if answered is None:
            raise _InputRequired(request)
        return result_type.model_validate(answered, by_name=False)
    answer: AnswerT = await ctx.session.send_request(
        request, result_type, metadata=ServerMessageMetadata(related_request_id=ctx.request_id)
    )
    return answer


async def _elicit(ctx: Ctx, message: str, schema: dict[str, Any]) -> types.CallToolResult:
    answer = await _ask(ctx, _elicit_request(message, schema), types.ElicitResult)
    return types.CallToolResult(
        content=_text(f"Elicitation completed: action={answer.action}, content={json.dumps(answer.content)}")
    )


def _metadata_tools(f: Fixture) -> None:
    @f.tool(
        types.Tool(
            name="test_annotated_tool",
            title="An annotated tool",
            description="Carries title, icons, annotations, _meta and execution",
            input_schema=_string_args("text"),
            output_schema={"type": "object", "properties": {"text": {"type": "string"}}},
            icons=[ICON],
            annotations=types.ToolAnnotations(
                title="Annotated", read_only_hint=True, idempotent_hint=True, open_world_hint=False
            ),
            execution=types.ToolExecution(task_support="optional"),
            meta=META,
        )
    )
    async def annotated(ctx: Ctx, args: dict[str, Any]) -> types.CallToolResult:
        return types.CallToolResult(content=_text(args["text"]), structured_content={"text": args["text"]})


RESOURCES = [
    types.Resource(
        uri="test://static-text",
        name="static-text",
        title="Static text",
        description="A static text resource",
        mime_type="text/plain",
        size=48,
        icons=[ICON],
        annotations=types.Annotations(audience=["user", "assistant"], priority=0.8),
        meta=META,
    ),
    types.Resource(
        uri="test://static-binary",
        name="static-binary",
        description="A static PNG",
        mime_type="image/png",
        size=len(PNG),
    ),
    types.Resource(
        uri="test://watched-resource",
        name="watched-resource",
        description="A resource that can be subscribed to",
        mime_type="text/plain",
    ),
]
TEMPLATES = [
    types.ResourceTemplate(
        uri_template="test://template/{id}/data",
        name="template-data",
        title="Data by id",
        description="JSON data for an id",
        mime_type="application/json",
        icons=[ICON],
        annotations=types.Annotations(priority=0.3),
        meta=META,
    )
]
PROMPTS = [
    types.Prompt(name="test_simple_prompt", description="A simple prompt"),
    types.Prompt(
        name="test_prompt_with_arguments",
        title="Prompt with arguments",
        description="A prompt with two arguments",
        arguments=[
            types.PromptArgument(
                name="arg1", title="First", description="First test argument", required=True
            ),
            types.PromptArgument(name="arg2", description="Second test argument", required=True),
        ],
        icons=[ICON],
        meta=META,
    ),
    types.Prompt(
        name="test_prompt_with_embedded_resource",
        description="A prompt that embeds a resource",
        arguments=[types.PromptArgument(name="resourceUri", description="URI to embed", required=True)],
    ),
    types.Prompt(name="test_prompt_with_image", description="A prompt with an image"),
]


def _read(uri: str) -> types.ReadResourceResult:
    contents: types.TextResourceContents | types.BlobResourceContents
    if uri == "test://static-text":
        contents = types.TextResourceContents(
            uri=uri, mime_type="text/plain", text="This is the content of the static text resource."
        )
    elif uri == "test://static-binary":
        contents = types.BlobResourceContents(uri=uri, mime_type="image/png", blob=PNG_B64)
    elif uri == "test://watched-resource":
        contents = types.TextResourceContents(uri=uri, mime_type="text/plain", text="watched")
    elif uri.startswith("test://template/") and uri.endswith("/data"):
        item = uri.removeprefix("test://template/").removesuffix("/data")
        body = {"id": item, "templateTest": True, "data": f"Data for ID: {item}"}
        contents = types.TextResourceContents(uri=uri, mime_type="application/json", text=json.dumps(body))
    else:
        raise MCPError(code=types.INVALID_PARAMS, message=f"Resource not found: {uri}")
    return types.ReadResourceResult(contents=[contents])


def _prompt(name: str, args: dict[str, str]) -> types.GetPromptResult:
    def user(content: Any) -> types.PromptMessage:
        return types.PromptMessage(role="user", content=content)

    if name == "test_simple_prompt":
        messages = [user(types.TextContent(type="text", text="This is a simple prompt for testing."))]
    elif name == "test_prompt_with_arguments":
        text = f"Prompt with arguments: arg1='{args.get('arg1')}', arg2='{args.get('arg2')}'"
        messages = [user(types.TextContent(type="text", text=text))]
    elif name == "test_prompt_with_embedded_resource":
        resource = types.TextResourceContents(
            uri=args.get("resourceUri", "test://example-resource"),
            mime_type="text/plain",
            text="Embedded resource content for testing.",
        )
        messages = [
            user(types.EmbeddedResource(type="resource", resource=resource)),
            user(types.TextContent(type="text", text="Please process the embedded resource above.")),
        ]
    elif name == "test_prompt_with_image":
        messages = [
            user(types.ImageContent(type="image", data=PNG_B64, mime_type="image/png")),
            user(types.TextContent(type="text", text="Please analyze the image above.")),
        ]
    else:
        raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt: {name}")
    return types.GetPromptResult(messages=messages, description=name)


class MemoryEventStore(EventStore):
    """Keeps every SSE event so a client that reconnects with Last-Event-ID gets the rest
    (the server-sse-polling scenario closes a stream mid-call)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, JSONRPCMessage | None]] = []
        self.ids = itertools.count(1)

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        event_id = str(next(self.ids))
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        found = [i for i, (event_id, _, _) in enumerate(self.events) if event_id == last_event_id]
        if not found:
            return None
        stream_id = self.events[found[0]][1]
        for event_id, stream, message in self.events[found[0] + 1 :]:
            if stream == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


def _catalog_handlers(f: Fixture) -> dict[str, Any]:
    async def list_tools(ctx: Ctx, params: types.PaginatedRequestParams) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[tool for tool, _ in f.tools.values()])

    async def call_tool(
        ctx: Ctx, params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        entry = f.tools.get(params.name)
        if entry is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {params.name}")
        responses = {
            key: answer.model_dump(by_alias=True, mode="json", exclude_none=True)
            for key, answer in (params.input_responses or {}).items()
        }
        token = _input_responses.set(responses)
        try:
            return await entry[1](ctx, dict(params.arguments or {}))
        except _InputRequired as asked:
            return types.InputRequiredResult(input_requests={ASK_KEY: asked.request})
        finally:
            _input_responses.reset(token)

    async def list_resources(ctx: Ctx, params: types.PaginatedRequestParams) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=RESOURCES)

    async def list_templates(
        ctx: Ctx, params: types.PaginatedRequestParams
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=TEMPLATES)

    async def read_resource(ctx: Ctx, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        return _read(str(params.uri))

    async def list_prompts(ctx: Ctx, params: types.PaginatedRequestParams) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=PROMPTS)

    async def get_prompt(ctx: Ctx, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        return _prompt(params.name, dict(params.arguments or {}))

    return {
        "on_list_tools": list_tools,
        "on_call_tool": call_tool,
        "on_list_resources": list_resources,
        "on_list_resource_templates": list_templates,
        "on_read_resource": read_resource,
        "on_list_prompts": list_prompts,
        "on_get_prompt": get_prompt,
    }


def _utility_handlers(f: Fixture) -> dict[str, Any]:
    async def subscribe(ctx: Ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
        f.subscribed.add(str(params.uri))
        return types.EmptyResult()

    async def unsubscribe(ctx: Ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        f.subscribed.discard(str(params.uri))
        return types.EmptyResult()

    async def complete(ctx: Ctx, params: types.CompleteRequestParams) -> types.CompleteResult:
        prefix = params.argument.value
        values = [v for v in COMPLETIONS if v.startswith(prefix)]
        if isinstance(params.ref, types.ResourceTemplateReference):
            values = [f"{prefix}{n}" for n in range(3)]
        return types.CompleteResult(
            completion=types.Completion(values=values, total=len(values), has_more=False)
        )

    return {
        "on_subscribe_resource": subscribe,
        "on_unsubscribe_resource": unsubscribe,
        "on_completion": complete,
    }


def build_server(fixture: Fixture | None = None) -> Server[Any]:
    f = fixture or Fixture()
    _content_tools(f)
    _interactive_tools(f)
    _metadata_tools(f)
    server: Server[Any] = Server(
        "mcpq-conformance-fixture",
        version="1.0.0",
        title="Conformance fixture",
        **_catalog_handlers(f),
        **_utility_handlers(f),
        # 2026-07-28 clients subscribe with subscriptions/listen (resources/subscribe before).
        on_subscriptions_listen=ListenHandler(f.bus),
    )

    async def set_level(ctx: Ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
        f.log_levels[id(ctx.session)] = params.level
        return types.EmptyResult()

    # Registered after construction: the constructor's on_set_logging_level warns that logging is
    # deprecated in 2026-07-28, and a warning is an error under pytest.
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
    return server


def build_app(fixture: Fixture | None = None) -> Starlette:
    return build_server(fixture).streamable_http_app(event_store=MemoryEventStore(), retry_interval=100)


class ThreadedApp:
    """An ASGI app under uvicorn on a loopback port, in a thread with its own event loop."""

    def __init__(self, app: Any, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/mcp"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the server did not start on port {self.port}")
            self.thread.join(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class FixtureBackend(ThreadedApp):
    """The fixture backend, served at `url`; `fixture` is its state."""

    def __init__(self, port: int) -> None:
        self.fixture = Fixture()
        super().__init__(build_app(self.fixture), port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    uvicorn.run(build_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
