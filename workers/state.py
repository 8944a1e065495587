"""What the jobs of one worker process share, and what each job is told about its own run."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.config import Settings
from shared.jobs.store import Claim, JobStore
from workers.interactive import Answers
from workers.progress import ProgressWriter
from workers.sessions import SessionPool
from workers.subscriptions import SubscriptionHolder


def new_worker_id() -> str:
    # Host and pid say where it runs; the random part keeps a restarted worker (pid 1 again, in a
    # container) from reviving the beat of the one that died, whose jobs must be handed on.
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class WorkerState:
    """Made once at worker startup and kept in arq's ctx as ctx["state"]."""

    settings: Settings
    store: JobStore
    sessions: SessionPool
    worker_id: str
    progress: ProgressWriter
    subscriptions: SubscriptionHolder
    # Answers to the questions its jobs' backends asked (workers/interactive.py).
    answers: Answers = field(default_factory=Answers)


def job_context(ctx: Mapping[str, Any]) -> tuple[WorkerState, Claim]:
    """The worker's state and this job's claim, from the ctx a job function receives."""
    state, claim = ctx["state"], ctx["claim"]
    if not isinstance(state, WorkerState) or not isinstance(claim, Claim):
        raise TypeError("a job function needs ctx['state'] and ctx['claim'] from workers.worker.Worker")
    return state, claim
