"""Dependencies shared by the routers."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from shared.context import AppContext
from shared.errors import Unauthorized


def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def require_admin(request: Request, ctx: Annotated[AppContext, Depends(get_context)]) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer token")
    if not hmac.compare_digest(token.encode(), ctx.settings.admin_token.encode()):
        raise Unauthorized("invalid token")


ContextDep = Annotated[AppContext, Depends(get_context)]
