"""What the front door lists and advertises.

- Catalog rows as MCP items, with every field the backend declared (title, icons, annotations,
  `_meta`, a tool's execution, a resource's size), each only on the protocol revisions that define
  it: a client is never sent a field its revision's schema does not have.
- Lists in pages: an opaque cursor holds the position of the last item sent.
- The capabilities of a virtual server: what the front door serves, where its backends have it.

A leaf module of the front door: it imports no other module of it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import mcp_types as types
from mcp.server.lowlevel.server import NotificationOptions
from mcp_types.version import is_version_at_least

from shared import pagination
from shared.errors import BadRequest
from shared.models import Prompt, Resource, Tool

# How many items one page of tools/list, resources/list, resources/templates/list or
# prompts/list holds.
PAGE_SIZE = 500

# The first revision whose schema has each item field (older ones have the rest).
SINCE = {
    "annotations": "2025-03-26",  # on tools; resources have had theirs since 2024-11-05
    "title": "2025-06-18",
    "_meta": "2025-06-18",
    "outputSchema": "2025-06-18",
    "icons": "2025-11-25",
}
# Fields of one revision only: tasks (`execution.taskSupport`) came in 2025-11-25 and moved to
# the `io.modelcontextprotocol/tasks` extension in 2026-07-28.
ONLY = {"execution": frozenset({"2025-11-25"})}


def for_revision(fields: dict[str, Any], version: str) -> dict[str, Any]:
    """The fields a client of protocol `version` may be sent: set, and defined in its revision."""
    kept: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None:
            continue
        if name in ONLY and version not in ONLY[name]:
            continue
        if name in SINCE and not is_version_at_least(version, SINCE[name]):
            continue
        kept[name] = value
    return kept


def _execution(declared: dict[str, Any] | None) -> dict[str, Any]:
    """Any call may run as a task here (every call is a job), so `optional` unless the backend
    itself requires a task."""
    execution = dict(declared or {})
    if execution.get("taskSupport") != "required":
        execution["taskSupport"] = "optional"
    return execution


def tool(row: Tool, version: str) -> types.Tool:
    fields = {
        "name": row.name,
        "title": row.title,
        "description": row.description,
        "inputSchema": row.input_schema,
        "outputSchema": row.output_schema,
        "annotations": row.annotations,
        "icons": row.icons,
        "execution": _execution(row.execution),
        "_meta": row.meta,
    }
    return types.Tool.model_validate(for_revision(fields, version), by_name=False)


def _resource_fields(row: Resource) -> dict[str, Any]:
    return {
        "name": row.name,
        "title": row.title,
        "description": row.description,
        "mimeType": row.mime_type,
        "annotations": row.annotations,
        "icons": row.icons,
        "_meta": row.meta,
    }


def resource(row: Resource, version: str) -> types.Resource:
    fields = {"uri": row.uri, **_resource_fields(row), "size": row.size}
    return types.Resource.model_validate(for_revision(fields, version), by_name=False)


def template(row: Resource, version: str) -> types.ResourceTemplate:
    fields = {"uriTemplate": row.uri, **_resource_fields(row)}
    return types.ResourceTemplate.model_validate(for_revision(fields, version), by_name=False)


def prompt(row: Prompt, version: str) -> types.Prompt:
    fields = {
        "name": row.name,
        "title": row.title,
        "description": row.description,
        # None when there are none: the catalog keeps `[]` for a prompt that declared no arguments.
        "arguments": [for_revision(dict(a), version) for a in row.arguments] or None,
        "icons": row.icons,
        "_meta": row.meta,
    }
    return types.Prompt.model_validate(for_revision(fields, version), by_name=False)


# --- pages ------------------------------------------------------------------------------------

# A member's place in its server: (position, item id); positions may repeat after edits.
Place = tuple[float, uuid.UUID]


def after(cursor: str | None) -> Place | None:
    """The place a cursor holds (400 for one this server did not make)."""
    if cursor is None:
        return None
    position, item_id = pagination.decode_values(cursor, 2)
    try:
        return float(position), uuid.UUID(str(item_id))
    except (TypeError, ValueError):
        raise BadRequest("invalid cursor") from None


def next_cursor(places: Sequence[Place], more: bool) -> str | None:
    """The cursor after the page's last item, if another page follows."""
    last = [places[-1][0], str(places[-1][1])] if places else None
    return pagination.next_cursor(last, more)


# --- capabilities -----------------------------------------------------------------------------


def capabilities(
    served: types.ServerCapabilities, backends: Sequence[dict[str, Any]]
) -> types.ServerCapabilities:
    """What a virtual server advertises: each optional capability only where the front door serves
    it (`served`: derived by the SDK from the handlers registered, so a relay that registers
    `logging/setLevel` or `resources/subscribe` switches it on) and one of its backends has it
    (`backends`: their capabilities as discovered). `listChanged` is the front door's own: it
    comes from `served` (the notification options), not from the backends."""

    def any_has(*path: str) -> bool:
        for caps in backends:
            value: Any = caps
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            # A capability is an object, present even when empty (`"completions": {}`); a flag
            # such as `subscribe` is a boolean.
            if value is not None and value is not False:
                return True
        return False

    caps = served.model_copy(deep=True)
    if caps.completions is not None and not any_has("completions"):
        caps.completions = None
    if caps.logging is not None and not any_has("logging"):
        caps.logging = None
    if caps.resources is not None and caps.resources.subscribe and not any_has("resources", "subscribe"):
        caps.resources.subscribe = False
    return caps


# The front door's list_changed flags (MCP `listChanged`): it sends notifications/*/list_changed
# when a server's catalog changes (api/mcp/subscriptions.py). On 2026-07-28 the SDK derives them
# from `subscriptions/listen`, which the front door serves.
NOTIFICATIONS = NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)
