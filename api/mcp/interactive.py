"""A backend's questions (elicitation, sampling) relayed to the MCP client, in its own protocol.

- Protocol 2025-06-18 / 2025-11-25: each question is a server-to-client request on the call's
  own stream (`related_request_id`), sent while the handler awaits the job; the client's answer
  goes back to the job (`ask_client`).
- Protocol 2026-07-28 (SEP-2322, multi round-trip): the call answers at once with an
  `InputRequiredResult` carrying the questions and a `requestState` naming the job; the client's
  retry with `inputResponses` answers them and awaits the same job (`input_required`,
  `resumed`). The state is sealed by the SDK's `RequestStateBoundary` (AES-GCM under the
  deployment's secret keys, with an expiry, bound to the method, the item, its arguments and
  the caller), so another caller cannot forge or replay it; an answer is taken once (the job
  store refuses a second), so the same caller cannot replay it either.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import mcp_types as types
from mcp import MCPError
from mcp.server.context import ServerRequestContext
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp.shared.message import ServerMessageMetadata
from mcp_types import INVALID_PARAMS, METHOD_NOT_FOUND
from pydantic import TypeAdapter, ValidationError

from api.mcp.wire import caller_of
from shared.config import Settings
from shared.jobs.interactive import ELICIT, as_answer, result_type
from shared.jobs.schemas import JobRecord

RELATED_TASK_META_KEY = "io.modelcontextprotocol/related-task"
# URL-mode elicitation came with 2025-11-25; a 2025-06-18 client knows form elicitation only.
URL_ELICITATION_SINCE = "2025-11-25"
_INPUT_REQUEST: TypeAdapter[types.InputRequest] = TypeAdapter(types.InputRequest)
# What the client must have declared to be asked each kind of question (2025-era capabilities).
_NEEDS = {
    ELICIT: types.ClientCapabilities(elicitation=types.ElicitationCapability()),
    "sampling/createMessage": types.ClientCapabilities(sampling=types.SamplingCapability()),
}


def boundary(settings: Settings) -> RequestStateBoundary:
    """The middleware that seals every `requestState` the front door mints and checks every one a
    client sends back. Keys: the deployment's secret keys (every API replica opens what another
    sealed); without them, a key of this process only."""
    keys = [k.strip() for k in settings.secret_keys.split(",") if k.strip()]
    security = RequestStateSecurity(
        keys=keys or [os.urandom(32)], ttl=settings.input_timeout_s + 60, bind_principal=_principal
    )
    return RequestStateBoundary(security, default_audience="mcpq")


def _principal(ctx: ServerRequestContext[Any, Any]) -> str:
    """Who may continue a multi-round-trip call: the same token, on the same server."""
    caller = caller_of(ctx)
    who = "anonymous" if caller.anonymous else str(caller.principal.token_id or "admin")
    return f"{caller.server.id}:{who}"


def input_required(record: JobRecord) -> types.InputRequiredResult:
    """The 2026-07-28 answer for a job that waits for input: its questions, and the job it is."""
    return types.InputRequiredResult(
        input_requests={
            key: _INPUT_REQUEST.validate_python(q, by_name=False) for key, q in record.asking.items()
        },
        request_state=json.dumps({"job": record.id}),
    )


def resumed(params: types.InputResponseRequestParams) -> tuple[str, dict[str, dict[str, Any]]] | None:
    """The job a retry continues and its answers, or None for a first call. The state was checked
    (and opened) by the boundary before the handler ran."""
    if params.request_state is None:
        return None
    try:
        job_id = json.loads(params.request_state)["job"]
    except (ValueError, KeyError, TypeError):
        raise MCPError(code=INVALID_PARAMS, message="Invalid or expired requestState") from None
    answers = {key: as_answer(response) for key, response in (params.input_responses or {}).items()}
    return str(job_id), answers


async def ask_client(
    ctx: ServerRequestContext[Any, Any], questions: dict[str, dict[str, Any]], related_task: str | None = None
) -> dict[str, dict[str, Any]]:
    """Ask a 2025-era client each question on the stream of the request it serves, at once; its
    answers (or the errors it gave) by key. A task's questions carry the task (2025-11-25)."""

    async def one(question: dict[str, Any]) -> dict[str, Any]:
        method = str(question.get("method"))
        url_mode = method == ELICIT and (question.get("params") or {}).get("mode") == "url"
        if url_mode and ctx.session.protocol_version < URL_ELICITATION_SINCE:
            error = {"code": METHOD_NOT_FOUND, "message": "the client does not support URL elicitation"}
            return {"error": error}
        if related_task is not None:
            params = dict(question.get("params") or {})
            params["_meta"] = {**(params.get("_meta") or {}), RELATED_TASK_META_KEY: {"taskId": related_task}}
            question = {**question, "params": params}
        needs = _NEEDS.get(method)
        if needs is None or not ctx.session.check_client_capability(needs):
            return {"error": {"code": METHOD_NOT_FOUND, "message": f"the client does not support {method}"}}
        try:
            request = _INPUT_REQUEST.validate_python(question, by_name=False)
            result = await ctx.session.send_request(
                request,
                result_type(question),
                metadata=ServerMessageMetadata(related_request_id=ctx.request_id),
            )
        except MCPError as exc:
            return {"error": {"code": exc.code, "message": exc.message}}
        except ValidationError as exc:
            return {"error": {"code": INVALID_PARAMS, "message": f"invalid answer from the client: {exc}"}}
        return as_answer(result)

    keys = list(questions)
    answers = await asyncio.gather(*(one(questions[key]) for key in keys))
    return dict(zip(keys, answers, strict=True))
