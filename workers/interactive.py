"""A backend's questions during a job (`elicitation/create`, `sampling/createMessage`), asked of
whoever holds the caller, across the queue.

The pooled session's `Client` has one elicitation and one sampling callback for every job on it.
Which job a question belongs to travels in a `ContextVar`: the SDK runs each outgoing message in
its sender's context, and a server request that arrives on a call's stream (2025-era backends)
or inside its `InputRequiredResult` (2026-07-28 backends, answered by the Client's
multi-round-trip driver in the calling task) is handled in that context too. A question with no
job in its context comes from a transport that does not carry it (legacy SSE, stdio): it goes to
the only job with a call on that session, or is refused as the SDK's default would.

The callback keeps the backend's request open: it puts the question in the job record
(input_required, pushed to waiters), waits for the answer pushed back on the answers channel,
and returns it to the backend. Waiting on a person is off every clock of the job: the SDK's
request timeout (its request clock), the job's own limits, and its lease in Redis. No answer
within `input_timeout_s`: the backend gets an error, and the job fails with `input_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
from mcp.client.session import ClientRequestContext, ClientSession
from mcp.shared._request_clock import waiting_on_a_person  # the SDK's pause of a request's timeout
from mcp_types import INTERNAL_ERROR, INVALID_REQUEST, REQUEST_TIMEOUT
from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError

from shared.jobs.interactive import ELICIT, SAMPLE
from shared.jobs.store import JobStore


class Answers:
    """The answers this worker process awaits, by (job id, question key), resolved by the one
    pub/sub reader of the worker (`on_answer`). An answer is also kept in the record, so one
    that pub/sub lost (a reconnect) is read there (`missed`)."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}

    def on_answer(self, message: str) -> None:
        """`{job id} {question key} {answer json}`; every worker hears every answer."""
        job_id, key, body = message.split(" ", 2)
        future = self._waiting.get((job_id, key))
        if future is not None and not future.done():
            future.set_result(json.loads(body))

    @contextlib.contextmanager
    def expect(self, job_id: str, key: str) -> Iterator[asyncio.Future[dict[str, Any]]]:
        """Register for the answer before the question is asked, so none is missed."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[(job_id, key)] = future
        try:
            yield future
        finally:
            self._waiting.pop((job_id, key), None)

    async def missed(self, store: JobStore) -> None:
        """After a pub/sub reconnect: read from the records the answers that may have been missed."""
        for (job_id, key), future in list(self._waiting.items()):
            try:
                answer = await store.stored_answer(job_id, key)
            except RedisError:
                return  # the next reconnect looks again
            if answer is not None and not future.done():
                future.set_result(answer)


@dataclass
class Interaction:
    """One job run's questions: where they go, how long an answer may take, and the job's own
    time limits, paused while a question waits."""

    job_id: str
    store: JobStore
    answers: Answers
    timeout_s: float
    limits: list[asyncio.Timeout] = field(default_factory=list)
    # Set when a question went unanswered: the job then fails with `input_timeout`.
    unanswered: str | None = None
    # Questions waiting for their answer (a 2025-era backend's are handled outside the job's task).
    _waiting: set[asyncio.Future[dict[str, Any]]] = field(default_factory=set)
    # While questions wait: how many, since when, and the limits' deadlines before the pause.
    _pauses: int = 0
    _paused_at: float = 0.0
    _held: list[tuple[asyncio.Timeout, float | None]] = field(default_factory=list)

    def close(self) -> None:
        """The job's run has ended (done, cancelled, failed): questions still open get an error,
        so nothing waits on for an answer nobody will use."""
        for answer in self._waiting:
            if not answer.done():
                answer.set_result(_error(INVALID_REQUEST, "the call has ended"))

    async def ask(self, method: str, params: BaseModel) -> dict[str, Any]:
        """The caller's answer, as {"result": ...} or {"error": {"code", "message"}}."""
        key = uuid.uuid4().hex[:16]
        question = {
            "method": method,
            "params": params.model_dump(by_alias=True, mode="json", exclude_none=True),
        }
        with self.answers.expect(self.job_id, key) as answer, waiting_on_a_person(), self._paused():
            self._waiting.add(answer)
            try:
                if not await self.store.ask(self.job_id, key, question, self.timeout_s):
                    return _error(INVALID_REQUEST, "the job is no longer running")
                async with asyncio.timeout(self.timeout_s):
                    return await answer
            except TimeoutError:
                # An answer that came just as time ran out still counts.
                taken = await self.store.take_answer(self.job_id, key)
                if taken is not None:
                    return taken
            finally:
                self._waiting.discard(answer)
            self.unanswered = f"no answer to the backend's {method} within {self.timeout_s:g}s"
            return _error(REQUEST_TIMEOUT, self.unanswered)

    @contextlib.contextmanager
    def _paused(self) -> Iterator[None]:
        """The job's limits stop while at least one question waits (questions may overlap), and
        move on by the time waited once the last is answered."""
        loop = asyncio.get_running_loop()
        if self._pauses == 0:
            self._paused_at = loop.time()
            self._held = [(limit, limit.when()) for limit in self.limits]
            for limit, _ in self._held:
                with contextlib.suppress(RuntimeError):
                    limit.reschedule(None)
        self._pauses += 1
        try:
            yield
        finally:
            self._pauses -= 1
            if self._pauses == 0:
                waited = loop.time() - self._paused_at
                for limit, when in self._held:
                    # A limit whose block has ended (the call ended while a question of a
                    # 2025-era backend, handled in a task of its own, still waited) stays as it is.
                    with contextlib.suppress(RuntimeError):
                        limit.reschedule(None if when is None else when + waited)


current: ContextVar[Interaction | None] = ContextVar("mcpq_interaction", default=None)

# The jobs with a call in flight on each pooled session. A transport that does not carry the
# call's context to its server requests (legacy SSE: they come on the session's one GET stream;
# stdio) still says which session asks: a question there belongs to its only job, and is refused
# when several share the session, since nothing tells which one it is for.
_calls: weakref.WeakKeyDictionary[ClientSession, list[Interaction]] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def calling(session: ClientSession, interaction: Interaction) -> Iterator[None]:
    """Note the job's call on `session` while the block runs."""
    on_session = _calls.setdefault(session, [])
    on_session.append(interaction)
    try:
        yield
    finally:
        on_session.remove(interaction)


def _interaction(context: ClientRequestContext) -> Interaction | None:
    found = current.get()
    if found is not None:
        return found
    on_session = _calls.get(context.session) or []
    return on_session[0] if len(on_session) == 1 else None


def _error(code: int, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _error_data(answer: dict[str, Any]) -> types.ErrorData:
    error = answer.get("error") or {}
    return types.ErrorData(
        code=int(error.get("code", INTERNAL_ERROR)), message=str(error.get("message", "no answer"))
    )


async def elicit(
    context: ClientRequestContext, params: types.ElicitRequestParams
) -> types.ElicitResult | types.ErrorData:
    """The pooled sessions' elicitation callback."""
    interaction = _interaction(context)
    if interaction is None:
        return types.ErrorData(code=INVALID_REQUEST, message="Elicitation not supported")
    answer = await interaction.ask(ELICIT, params)
    if "result" not in answer:
        return _error_data(answer)
    try:
        return types.ElicitResult.model_validate(answer["result"], by_name=False)
    except ValidationError as exc:
        return types.ErrorData(code=INTERNAL_ERROR, message=f"invalid elicitation answer: {exc}")


async def sample(
    context: ClientRequestContext, params: types.CreateMessageRequestParams
) -> types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData:
    """The pooled sessions' sampling callback."""
    interaction = _interaction(context)
    if interaction is None:
        return types.ErrorData(code=INVALID_REQUEST, message="Sampling not supported")
    answer = await interaction.ask(SAMPLE, params)
    if "result" not in answer:
        return _error_data(answer)
    shape = (
        types.CreateMessageResultWithTools
        if params.tools or params.tool_choice
        else types.CreateMessageResult
    )
    try:
        return shape.model_validate(answer["result"], by_name=False)
    except ValidationError as exc:
        return types.ErrorData(code=INTERNAL_ERROR, message=f"invalid sampling answer: {exc}")
