"""Dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shared.auth import service as auth_service
from shared.auth.schemas import Principal
from shared.context import AppContext
from shared.errors import Unauthorized


async def get_context(request: Request) -> AppContext:
    # async, though it awaits nothing: FastAPI runs a plain `def` dependency in a thread pool, a
    # thread hop on every request (py-spy: a fifth of the API's CPU under load).
    ctx: AppContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[AppContext, Depends(get_context)]


async def authenticate(request: Request, ctx: ContextDep) -> Principal:
    """The caller. A token lookup opens its own short session and closes it before the handler runs."""
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret:
        raise Unauthorized("missing bearer token")
    return await auth_service.authenticate(ctx, secret)


PrincipalDep = Annotated[Principal, Depends(authenticate)]
