"""Every query about gateways and their catalog lives here."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from shared.models import Gateway, Prompt, Resource, Tool, server_prompts, server_resources, server_tools

CatalogModel = type[Tool] | type[Resource] | type[Prompt]

# Each list a virtual server shows: its name, item model, membership table and item column.
_LISTS: tuple[tuple[str, CatalogModel, Table, str], ...] = (
    ("tools", Tool, server_tools, "tool_id"),
    ("resources", Resource, server_resources, "resource_id"),
    ("prompts", Prompt, server_prompts, "prompt_id"),
)

# What virtual servers show of a gateway's items: (list, server id) -> the member rows' values.
ServerViews = dict[tuple[str, uuid.UUID], list[tuple[Any, ...]]]


def visible_to(team_id: uuid.UUID | None) -> ColumnElement[bool]:
    """Gateways a caller of `team_id` sees: its team's and the public ones (None: every gateway)."""
    if team_id is None:
        return true()
    return or_(Gateway.team_id == team_id, Gateway.visibility == "public")


async def get(s: AsyncSession, gateway_id: uuid.UUID) -> Gateway | None:
    return await s.get(Gateway, gateway_id)


async def name_taken(s: AsyncSession, team_id: uuid.UUID, name: str) -> bool:
    stmt = select(Gateway.id).where(Gateway.team_id == team_id, Gateway.name == name)
    return (await s.scalar(stmt)) is not None


async def list_visible(s: AsyncSession, team_id: uuid.UUID | None) -> list[Gateway]:
    stmt = select(Gateway).where(visible_to(team_id)).order_by(Gateway.name, Gateway.id)
    return list(await s.scalars(stmt))


async def sealed_credentials(s: AsyncSession) -> list[Gateway]:
    """Gateways that have encrypted headers, OAuth settings or stdio env (for key rotation)."""
    sealed = or_(Gateway.headers_enc != "", Gateway.auth_enc != "", Gateway.env_enc != "")
    return list(await s.scalars(select(Gateway).where(sealed).order_by(Gateway.id)))


async def counts(s: AsyncSession, gateway_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[int, int, int]]:
    """(tools, resources, prompts) per gateway, in three grouped queries."""
    result: dict[uuid.UUID, list[int]] = {gid: [0, 0, 0] for gid in gateway_ids}
    models: tuple[CatalogModel, ...] = (Tool, Resource, Prompt)
    for index, model in enumerate(models):
        rows = await s.execute(
            select(model.gateway_id, func.count())
            .where(model.gateway_id.in_(gateway_ids))
            .group_by(model.gateway_id)
        )
        for gid, count in rows.tuples():
            result[gid][index] = count
    return {gid: (c[0], c[1], c[2]) for gid, c in result.items()}


async def delete_gateway(s: AsyncSession, gateway_id: uuid.UUID) -> bool:
    result = await s.execute(delete(Gateway).where(Gateway.id == gateway_id).returning(Gateway.id))
    return result.scalar_one_or_none() is not None


def _tool_row(t: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": t["name"],
        "title": t.get("title"),
        "description": t.get("description"),
        # Stored exactly as declared (any JSON Schema dialect): served back verbatim.
        "input_schema": t.get("inputSchema") or {"type": "object"},
        "output_schema": t.get("outputSchema"),
        "annotations": t.get("annotations"),
        "icons": t.get("icons"),
        "meta": t.get("_meta"),
        "execution": t.get("execution"),
    }


def _resource_row(r: dict[str, Any], template: bool) -> dict[str, Any]:
    uri = r["uriTemplate"] if template else r["uri"]
    return {
        "uri": uri,
        "is_template": template,
        "name": r.get("name") or uri,
        "title": r.get("title"),
        "description": r.get("description"),
        "mime_type": r.get("mimeType"),
        "size": None if template else r.get("size"),
        "annotations": r.get("annotations"),
        "icons": r.get("icons"),
        "meta": r.get("_meta"),
    }


def _prompt_row(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": p["name"],
        "title": p.get("title"),
        "description": p.get("description"),
        "arguments": p.get("arguments") or [],
        "icons": p.get("icons"),
        "meta": p.get("_meta"),
    }


async def replace_catalog(s: AsyncSession, gateway_id: uuid.UUID, catalog: dict[str, Any]) -> None:
    """Make the stored tools, resources and prompts match a fresh discovery: add, update, remove.
    Every field MCP defines for an item is kept, so the front door can pass it through."""
    await _sync(s, Tool, gateway_id, "name", [_tool_row(t) for t in catalog.get("tools", [])])
    resources = [_resource_row(r, False) for r in catalog.get("resources", [])]
    resources += [_resource_row(r, True) for r in catalog.get("resource_templates", [])]
    await _sync(s, Resource, gateway_id, "uri", resources)
    await _sync(s, Prompt, gateway_id, "name", [_prompt_row(p) for p in catalog.get("prompts", [])])


async def _sync(
    s: AsyncSession,
    model: CatalogModel,
    gateway_id: uuid.UUID,
    key: str,
    fresh: list[dict[str, Any]],
) -> None:
    rows: list[Any] = list(await s.scalars(select(model).where(model.gateway_id == gateway_id)))
    existing = {getattr(row, key): row for row in rows}
    wanted = {item[key]: item for item in fresh}
    for name, row in existing.items():
        if name not in wanted:
            await s.delete(row)
    for name, values in wanted.items():
        current = existing.get(name)
        if current is None:
            s.add(model(gateway_id=gateway_id, **values))
            continue
        for field, value in values.items():
            if getattr(current, field) != value:
                setattr(current, field, value)


async def server_views(s: AsyncSession, gateway_id: uuid.UUID) -> ServerViews:
    """What each virtual server shows of this gateway's items, list by list (taken before and after
    a change, the difference says which servers' lists changed)."""
    views: defaultdict[tuple[str, uuid.UUID], list[tuple[Any, ...]]] = defaultdict(list)
    for name, model, table, column in _LISTS:
        attrs = [column.key for column in model.__table__.columns]
        stmt = (
            select(table.c.server_id, model)
            .join(model, table.c[column] == model.id)
            .where(model.gateway_id == gateway_id)
            .order_by(table.c.server_id, table.c.position)
        )
        for server_id, row in (await s.execute(stmt)).tuples():
            views[(name, server_id)].append(tuple(getattr(row, key) for key in attrs))
    return dict(views)


def changed_lists(before: ServerViews, after: ServerViews) -> dict[uuid.UUID, set[str]]:
    """The lists of each server that differ between two views."""
    changed: defaultdict[uuid.UUID, set[str]] = defaultdict(set)
    for name, server_id in before.keys() | after.keys():
        if before.get((name, server_id)) != after.get((name, server_id)):
            changed[server_id].add(name)
    return dict(changed)
