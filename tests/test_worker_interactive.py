"""The worker's side of a backend's questions (workers/interactive.py), against real Redis: which
job a question belongs to, the record's input_required state, the pushed answer, a refusal."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import mcp_types as types
import pytest
from mcp.client.session import ClientRequestContext, ClientSession
from redis.asyncio import Redis

from shared.config import Settings
from shared.jobs.schemas import JobStatus
from shared.jobs.store import JobStore
from shared.redis import make_redis, subscribe_forever
from tests.conftest import isolated
from tests.jobs_helpers import plant_record
from workers import interactive
from workers.interactive import Answers, Interaction

QUESTION = types.ElicitRequestFormParams(
    message="name?", requested_schema={"type": "object", "properties": {"name": {"type": "string"}}}
)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = make_redis(settings)
    yield client
    await client.aclose()


@contextlib.asynccontextmanager
async def listening(redis: Redis, store: JobStore, answers: Answers) -> AsyncIterator[None]:
    """The worker's pub/sub reader, delivering answers."""
    ready = asyncio.Event()
    task = asyncio.create_task(
        subscribe_forever(redis, {store.answers_channel: answers.on_answer}, lambda: None, ready)
    )
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def running_job(redis: Redis, settings: Settings) -> str:
    job_id = uuid.uuid4().hex
    await plant_record(redis, settings, job_id, "call_tool", "t.greet")
    await redis.hset(settings.key("job", job_id), "status", "running")  # type: ignore[misc]
    return job_id


def session() -> ClientSession:
    # Only its identity matters here: the callback is called directly, as the SDK would.
    return object.__new__(ClientSession)


async def _asked(store: JobStore, job_id: str) -> dict[str, Any]:
    for _ in range(200):
        record = await store.get(job_id)
        if record is not None and record.asking:
            return record.asking
        await asyncio.sleep(0.01)
    raise AssertionError("never asked")


async def test_question_outside_the_calls_context_goes_to_the_only_call_on_its_session(
    redis: Redis, settings: Settings
) -> None:
    """A transport that does not carry the call's context (legacy SSE, stdio): the question
    belongs to the only job with a call on that session; the answer is pushed back to it."""
    store, answers = JobStore(redis, settings), Answers()
    job_id = await running_job(redis, settings)
    interaction = Interaction(job_id, store, answers, timeout_s=10)
    shared = session()
    async with listening(redis, store, answers):
        with interactive.calling(shared, interaction):
            # Run with no job in the context, as a transport's reader task would.
            asking = asyncio.create_task(
                interactive.elicit(ClientRequestContext(session=shared, request_id=1), QUESTION),
                context=contextvars.Context(),  # no job in it, as in a transport's reader task
            )
            [(key, question)] = (await _asked(store, job_id)).items()
            assert question == {
                "method": "elicitation/create",
                "params": QUESTION.model_dump(by_alias=True, mode="json", exclude_none=True),
            }
            record = await store.get(job_id)
            assert record is not None and record.status is JobStatus.INPUT_REQUIRED
            assert await store.answer(
                job_id, {key: {"result": {"action": "accept", "content": {"name": "Ada"}}}}
            ) == ("ok", "")
            result = await asyncio.wait_for(asking, 10)
    assert isinstance(result, types.ElicitResult) and result.content == {"name": "Ada"}
    record = await store.get(job_id)
    assert record is not None and record.status is JobStatus.RUNNING and not record.asking


async def test_question_refused_when_several_calls_share_the_session(
    redis: Redis, settings: Settings
) -> None:
    store, answers = JobStore(redis, settings), Answers()
    shared = session()
    one = Interaction(await running_job(redis, settings), store, answers, timeout_s=10)
    two = Interaction(await running_job(redis, settings), store, answers, timeout_s=10)
    with interactive.calling(shared, one), interactive.calling(shared, two):
        result = await asyncio.create_task(
            interactive.elicit(ClientRequestContext(session=shared, request_id=1), QUESTION),
            context=contextvars.Context(),  # no job in it, as in a transport's reader task
        )
    assert isinstance(result, types.ErrorData)
    for job in (one, two):
        record = await store.get(job.job_id)
        assert record is not None and record.status is JobStatus.RUNNING  # nobody was asked


async def test_answer_missed_by_pub_sub_is_read_from_the_record(redis: Redis, settings: Settings) -> None:
    """Pub/sub is at most once: after a reconnect the worker reads answers from the records."""
    store, answers = JobStore(redis, settings), Answers()
    job_id = await running_job(redis, settings)
    interaction = Interaction(job_id, store, answers, timeout_s=10)
    token = interactive.current.set(interaction)
    try:
        asking = asyncio.create_task(
            interactive.sample(
                ClientRequestContext(session=session(), request_id=1),
                types.CreateMessageRequestParams(messages=[], max_tokens=5),
            )
        )
    finally:
        interactive.current.reset(token)
    [key] = await _asked(store, job_id)
    reply = {"role": "assistant", "content": {"type": "text", "text": "hi"}, "model": "m"}
    assert (await store.answer(job_id, {key: {"result": reply}}))[0] == "ok"  # nobody listening
    await asyncio.sleep(0.05)
    assert not asking.done()
    await answers.missed(store)
    result = await asyncio.wait_for(asking, 10)
    assert isinstance(result, types.CreateMessageResult) and result.model == "m"


async def test_overlapping_questions_pause_the_jobs_limit_until_the_last_is_answered(
    redis: Redis, settings: Settings
) -> None:
    store, answers = JobStore(redis, settings), Answers()
    job_id = await running_job(redis, settings)
    accept = {"result": {"action": "accept", "content": {"name": "x"}}}
    async with listening(redis, store, answers), asyncio.timeout(30) as limit:
        before = limit.when()
        assert before is not None
        interaction = Interaction(job_id, store, answers, timeout_s=10, limits=[limit])
        context = ClientRequestContext(session=session(), request_id=1)
        token = interactive.current.set(interaction)
        try:
            first = asyncio.create_task(interactive.elicit(context, QUESTION))
            second = asyncio.create_task(interactive.elicit(context, QUESTION))
        finally:
            interactive.current.reset(token)
        for _ in range(200):
            record = await store.get(job_id)
            if record is not None and len(record.asking) == 2:
                break
            await asyncio.sleep(0.01)
        one, two = record.asking if record is not None else ()
        assert limit.when() is None  # off the clock while someone is asked
        await store.answer(job_id, {one: accept})
        await asyncio.sleep(0.2)
        assert (first.done() or second.done()) and limit.when() is None  # the other still waits
        await store.answer(job_id, {two: accept})
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        after = limit.when()
        assert after is not None and after >= before + 0.2  # moved on by the time waited


async def test_every_move_between_working_and_input_required_is_pushed(
    redis: Redis, settings: Settings
) -> None:
    """The job record is published on the done channel at each move: asked (input_required),
    answered (running), a question withdrawn unanswered (running), and a re-run by another worker
    of a job whose worker stopped while it asked (running); waiters (a task's status pushes) need
    no poll. A job that never asks is not published when claimed: only at its end."""
    settings = isolated(settings)  # a queue of its own: the claim below takes all that is due
    store = JobStore(redis, settings)
    pushed: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def on_done(message: str) -> None:
        job_id, _, body = message.partition(" ")
        pushed.put_nowait((job_id, json.loads(body)))

    async def next_push() -> tuple[str, str, set[str]]:
        job_id, record = await asyncio.wait_for(pushed.get(), 10)
        return job_id, record["status"], {name for name in record if name.startswith(("ask:", "answer:"))}

    job_id = await running_job(redis, settings)
    quiet = uuid.uuid4().hex
    await plant_record(redis, settings, quiet, "call_tool", "t.greet")
    await redis.zadd(settings.queue_name, {job_id: 0, quiet: 0})
    ready = asyncio.Event()
    reader = asyncio.create_task(subscribe_forever(redis, {store.done_channel: on_done}, lambda: None, ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        question = {"method": "elicitation/create", "params": {"message": "name?"}}
        assert await store.ask(job_id, "one", question, 10)
        assert await next_push() == (job_id, "input_required", {"ask:one"})
        accept = {"result": {"action": "accept", "content": {"name": "x"}}}
        assert await store.answer(job_id, {"one": accept}) == ("ok", "")
        # The answer waits for the worker in the record, but is not published.
        assert await next_push() == (job_id, "running", set())
        assert await store.take_answer(job_id, "one") == accept  # taken: no move, no push
        assert await store.ask(job_id, "two", question, 10)
        assert await next_push() == (job_id, "input_required", {"ask:two"})
        assert await store.take_answer(job_id, "two") is None  # withdrawn, unanswered
        assert await next_push() == (job_id, "running", set())
        assert await store.ask(job_id, "three", question, 10)
        assert await next_push() == (job_id, "input_required", {"ask:three"})
        claimed = await store.claim("another-worker", 10)
        assert {c.job_id for c in claimed} == {job_id, quiet}
        assert await next_push() == (job_id, "running", set())
        await asyncio.sleep(0.1)
        assert pushed.empty()  # the job that never asked was claimed unpublished
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
