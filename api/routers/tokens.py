"""Team API tokens: create (the secret is shown once), list, revoke."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import ContextDep, PrincipalDep
from api.responses import BODY, errors
from shared.auth import service as auth_service
from shared.auth.schemas import TokenCreate, TokenCreated, TokenList

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])


@router.post("", status_code=201, responses=errors(400, 403, 404, *BODY))
async def create_token(body: TokenCreate, ctx: ContextDep, principal: PrincipalDep) -> TokenCreated:
    return await auth_service.create(ctx, principal, body)


@router.get("", responses=errors(403))
async def list_tokens(ctx: ContextDep, principal: PrincipalDep) -> TokenList:
    return TokenList(items=await auth_service.list_all(ctx, principal))


@router.delete("/{token_id}", status_code=204, responses=errors(400, 403, 404))
async def revoke_token(token_id: str, ctx: ContextDep, principal: PrincipalDep) -> Response:
    await auth_service.revoke(ctx, principal, token_id)
    return Response(status_code=204)
