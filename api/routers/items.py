"""Tools, resources and prompts over REST: the same four routes for every kind, made once.

    GET  /v1/{kind}                the catalog page the caller sees
    GET  /v1/{kind}/{ref}          one item
    POST /v1/{kind}/{ref}/{verb}   run it and await the result (call, read, render)
    POST /v1/{kind}/{ref}/jobs     enqueue it; poll GET /v1/jobs/{id}

A tool or prompt `{ref}` is its id or `{gateway}.{name}`; a resource `{ref}` is its id or
`{gateway}:{uri}` (the URI may contain slashes, so it is a path parameter: percent-encode what a
URL cannot carry).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import ContextDep, PrincipalDep
from api.routers.jobs import accepted, call_response
from shared.items import service as items
from shared.items.kind import ItemKind
from shared.prompts.kind import PROMPTS
from shared.prompts.schemas import PromptOut, PromptPage, RenderJobRequest, RenderRequest
from shared.resources.kind import RESOURCES
from shared.resources.schemas import ReadJobRequest, ReadRequest, ResourceOut, ResourcePage
from shared.tools.kind import TOOLS
from shared.tools.schemas import CallRequest, JobSubmitRequest, ToolOut, ToolPage

# A client that may send a request twice (a retry after a dropped connection) sends the same key
# both times: within MCPQ_RESULT_TTL_S its team gets the same job back, never a second run.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Any string of up to 255 visible ASCII characters, new for each new request: "
        "the same key (from the same team, within the result TTL) returns the same job instead of "
        "running it again; the same key with a different request is 422.",
    ),
]


class JobBody(Protocol):
    """A request body of an item route: what it asks of the item."""

    @property
    def request(self) -> Any: ...


class AwaitedBody(JobBody, Protocol):
    timeout_s: float | None


def _typed(endpoint: Callable[..., Any], **annotations: Any) -> Callable[..., Any]:
    """`endpoint` with some parameters' types set per router: FastAPI reads the signature to know
    which model to parse the body into and which to document."""
    signature = inspect.signature(endpoint, eval_str=True)
    endpoint.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[
            p.replace(annotation=annotations.get(p.name, p.annotation)) for p in signature.parameters.values()
        ]
    )
    return endpoint


def item_router(
    kind: ItemKind[Any, Any, Any, Any],
    *,
    verb: str,
    path_ref: str,
    out: type[BaseModel],
    page: type[BaseModel],
    awaited_body: type[BaseModel],
    job_body: type[BaseModel],
) -> APIRouter:
    router = APIRouter(prefix=f"/v1/{kind.plural}", tags=[kind.plural])

    async def list_items(
        ctx: ContextDep,
        principal: PrincipalDep,
        gateway: str | None = None,
        limit: Annotated[int, Query(ge=1, le=items.MAX_PAGE)] = 100,
        cursor: str | None = None,
    ) -> Any:
        found, next_cursor = await items.list_page(
            ctx, principal, kind, gateway=gateway, cursor=cursor, limit=limit
        )
        return page(items=found, next_cursor=next_cursor)

    async def get_item(ref: str, ctx: ContextDep, principal: PrincipalDep) -> Any:
        return await items.get(ctx, principal, kind, ref)

    async def run_item(
        ref: str,
        body: AwaitedBody,
        ctx: ContextDep,
        principal: PrincipalDep,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        record = await items.call(ctx, principal, kind, ref, body.request, body.timeout_s, idempotency_key)
        return call_response(record)

    async def submit_item(
        ref: str,
        body: JobBody,
        ctx: ContextDep,
        principal: PrincipalDep,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        return accepted(await items.submit(ctx, principal, kind, ref, body.request, idempotency_key))

    name = kind.name
    router.add_api_route("", list_items, methods=["GET"], response_model=page, name=f"list_{kind.plural}")
    router.add_api_route(
        f"/{path_ref}/{verb}", _typed(run_item, body=awaited_body), methods=["POST"], name=f"{verb}_{name}"
    )
    router.add_api_route(
        f"/{path_ref}/jobs",
        _typed(submit_item, body=job_body),
        methods=["POST"],
        status_code=202,
        name=f"submit_{name}_job",
    )
    # Last: a resource's `{ref:path}` would otherwise swallow the two routes above.
    router.add_api_route(f"/{path_ref}", get_item, methods=["GET"], response_model=out, name=f"get_{name}")
    return router


tools = item_router(
    TOOLS,
    verb="call",
    path_ref="{ref}",
    out=ToolOut,
    page=ToolPage,
    awaited_body=CallRequest,
    job_body=JobSubmitRequest,
)
resources = item_router(
    RESOURCES,
    verb="read",
    path_ref="{ref:path}",
    out=ResourceOut,
    page=ResourcePage,
    awaited_body=ReadRequest,
    job_body=ReadJobRequest,
)
prompts = item_router(
    PROMPTS,
    verb="render",
    path_ref="{ref}",
    out=PromptOut,
    page=PromptPage,
    awaited_body=RenderRequest,
    job_body=RenderJobRequest,
)
