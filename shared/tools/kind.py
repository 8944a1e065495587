"""Tools as a catalog kind: named `{gateway}.{tool}`, called with JSON arguments checked against
the tool's input schema before anything is enqueued."""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Any

from jsonschema import SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from shared.errors import InvalidArguments
from shared.gateways.service import backend_spec
from shared.items.kind import ItemKind, JobSpec
from shared.jobs.schemas import JobKind
from shared.models import Gateway, Tool, server_tools
from shared.tools.schemas import PlainTool, ToolOut

log = logging.getLogger(__name__)


def to_out(tool: Tool, gateway: Gateway) -> ToolOut:
    return ToolOut(
        id=tool.id,
        name=tool.name,
        qualified_name=f"{gateway.name}.{tool.name}",
        gateway=gateway.name,
        gateway_id=gateway.id,
        title=tool.title,
        description=tool.description,
        input_schema=tool.input_schema,
        output_schema=tool.output_schema,
        annotations=tool.annotations,
        icons=tool.icons,
        meta=tool.meta,
        execution=tool.execution,
    )


def retry_safe(annotations: dict[str, Any] | None) -> bool:
    """A tool that declares it may run twice (MCP idempotentHint/readOnlyHint)."""
    hints = annotations or {}
    return bool(hints.get("idempotentHint") or hints.get("readOnlyHint"))


def to_plain(tool: Tool, gateway: Gateway) -> PlainTool:
    return PlainTool(
        id=str(tool.id),
        name=tool.name,
        qualified_name=f"{gateway.name}.{tool.name}",
        input_schema=tool.input_schema,
        schema_key=json.dumps(tool.input_schema, sort_keys=True),
        retry_safe=retry_safe(tool.annotations),
        backend=backend_spec(gateway),
        team_id=gateway.team_id,
        public=gateway.visibility == "public",
    )


@lru_cache(maxsize=4096)
def _validator(schema_json: str) -> Validator | None:
    schema = json.loads(schema_json)
    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        # A backend's broken schema must not block its tool; the backend validates again anyway.
        log.warning("ignoring an invalid input schema: %s", exc.message)
        return None
    return cls(schema)


def check_arguments(tool: PlainTool, arguments: dict[str, Any]) -> None:
    validator = _validator(tool.schema_key)
    if validator is None:
        return
    errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    if errors:
        details = [
            {"path": "/".join(str(p) for p in e.absolute_path), "message": e.message} for e in errors[:20]
        ]
        raise InvalidArguments(
            f"arguments do not match the input schema of {tool.qualified_name}: {details[0]['message']}",
            extra={"errors": details},
        )


def to_job(tool: PlainTool, arguments: dict[str, Any]) -> JobSpec:
    check_arguments(tool, arguments)
    return JobSpec(
        fields={"tool": tool.name, "arguments": arguments},
        item=tool.qualified_name,
        retry_safe=tool.retry_safe,
    )


TOOLS: ItemKind[Tool, PlainTool, ToolOut, dict[str, Any]] = ItemKind(
    name="tool",
    plural="tools",
    job_kind=JobKind.CALL_TOOL,
    model=Tool,
    key=Tool.name,
    separator=".",
    members=server_tools,
    to_out=to_out,
    to_plain=to_plain,
    to_job=to_job,
)
