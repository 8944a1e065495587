"""GET /v1/queue: how many jobs wait for a worker and how many run, for any authenticated caller
(the console shows it; Prometheus reads the same depth from /metrics)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import ContextDep

router = APIRouter(prefix="/v1/queue", tags=["jobs"])


class QueueState(BaseModel):
    # Across every team: jobs waiting for a worker, and jobs a worker has started.
    depth: int
    running: int


@router.get("")
async def queue_state(ctx: ContextDep) -> QueueState:
    return QueueState(depth=await ctx.queue.depth(), running=await ctx.queue.running())
