"""Team API tokens: create (the secret is shown once), list, revoke."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import ContextDep, PrincipalDep
from shared.auth import service as auth_service
from shared.auth.schemas import TokenCreate, TokenCreated, TokenList

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])


@router.post("", status_code=201)
async def create_token(body: TokenCreate, ctx: ContextDep, principal: PrincipalDep) -> TokenCreated:
    return await auth_service.create(ctx, principal, body)


@router.get("")
async def list_tokens(ctx: ContextDep, principal: PrincipalDep) -> TokenList:
    return TokenList(items=await auth_service.list_all(ctx, principal))


@router.delete("/{token_id}", status_code=204)
async def revoke_token(token_id: str, ctx: ContextDep, principal: PrincipalDep) -> Response:
    await auth_service.revoke(ctx, principal, token_id)
    return Response(status_code=204)
