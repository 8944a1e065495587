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
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, Protocol, cast

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

from api.deps import ContextDep, PrincipalDep, authenticate, get_context
from api.responses import BODY, errors, job_call, job_submit
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


# Serves a request FastAPI would serve the same way, or returns None to leave it to FastAPI.
FastPath = Callable[[Request], Awaitable[Response | None]]


def with_fast_path(fast: FastPath) -> type[APIRoute]:
    """A route class whose requests go to `fast` first and to FastAPI's own handler when `fast`
    declines. The route, its parameters and its OpenAPI document are FastAPI's as declared."""

    class FastPathRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            served = super().get_route_handler()

            async def handler(request: Request) -> Response:
                response = await fast(request)
                return response if response is not None else await served(request)

            return handler

    return FastPathRoute


def item_router(
    kind: ItemKind[Any, Any, Any, Any],
    *,
    verb: str,
    path_ref: str,
    ref_doc: str,
    out: type[BaseModel],
    page: type[BaseModel],
    awaited_body: type[BaseModel],
    job_body: type[BaseModel],
) -> APIRouter:
    router = APIRouter(prefix=f"/v1/{kind.plural}", tags=[kind.plural])
    # Documented with an example that names a real item in tests/fuzz (the gateway `demo`).
    example = f"demo{kind.separator}{'demo://readme' if kind.separator == ':' else 'echo'}"
    if kind.name == "prompt":
        example = "demo.greet"
    ref = Annotated[str, Path(description=ref_doc, examples=[example])]
    # 422 also: a reused Idempotency-Key; 503 (every route): the queue is full or Redis is away.
    refused = (400, 403, 404, 429, *BODY)

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

    async def run_ordinary(request: Request) -> JSONResponse | None:
        """`run_item` for a request as most clients send it: a JSON body that is valid as it is,
        and no Idempotency-Key. FastAPI's handler solves the dependencies and checks every
        parameter anew on each request: 172 us against 42 us for this in a micro-benchmark, about
        a tenth of the API's CPU per call. The steps are FastAPI's, in its order: the body as
        `request.json()` reads it, validated as the body model; the context; the caller (a 401
        before the endpoint). Anything else goes to FastAPI, which answers it (its 422s) as ever."""
        if request.headers.get("content-type") != "application/json" or "idempotency-key" in request.headers:
            return None
        try:
            body = cast(AwaitedBody, awaited_body.model_validate(json.loads(await request.body())))
        except ValueError:  # not JSON, or not a valid body (pydantic's ValidationError is one)
            return None
        ctx = await get_context(request)
        return await run_item(request.path_params["ref"], body, ctx, await authenticate(request, ctx))

    async def submit_item(
        ref: str,
        body: JobBody,
        ctx: ContextDep,
        principal: PrincipalDep,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        return accepted(await items.submit(ctx, principal, kind, ref, body.request, idempotency_key))

    name = kind.name
    router.add_api_route(
        "",
        list_items,
        methods=["GET"],
        response_model=page,
        name=f"list_{kind.plural}",
        responses=errors(400, 422),
    )
    router.add_api_route(
        f"/{path_ref}/{verb}",
        _typed(run_item, body=awaited_body, ref=ref),
        methods=["POST"],
        name=f"{verb}_{name}",
        responses=job_call(*refused),
        route_class_override=with_fast_path(run_ordinary),
    )
    router.add_api_route(
        f"/{path_ref}/jobs",
        _typed(submit_item, body=job_body, ref=ref),
        methods=["POST"],
        status_code=202,
        name=f"submit_{name}_job",
        responses=job_submit(*refused),
    )
    # Last: a resource's `{ref:path}` would otherwise swallow the two routes above.
    router.add_api_route(
        f"/{path_ref}",
        _typed(get_item, ref=ref),
        methods=["GET"],
        response_model=out,
        name=f"get_{name}",
        responses=errors(400, 404),
    )
    return router


tools = item_router(
    TOOLS,
    verb="call",
    path_ref="{ref}",
    ref_doc="the tool's id, or `{gateway}.{tool}`",
    out=ToolOut,
    page=ToolPage,
    awaited_body=CallRequest,
    job_body=JobSubmitRequest,
)
resources = item_router(
    RESOURCES,
    verb="read",
    path_ref="{ref:path}",
    ref_doc="the resource's id, or `{gateway}:{uri}` (percent-encode what a URL cannot carry)",
    out=ResourceOut,
    page=ResourcePage,
    awaited_body=ReadRequest,
    job_body=ReadJobRequest,
)
prompts = item_router(
    PROMPTS,
    verb="render",
    path_ref="{ref}",
    ref_doc="the prompt's id, or `{gateway}.{prompt}`",
    out=PromptOut,
    page=PromptPage,
    awaited_body=RenderRequest,
    job_body=RenderJobRequest,
)
