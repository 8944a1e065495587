"""Questions a job's backend asks its caller, and their answers, as plain JSON.

A question is MCP's input request, `{"method", "params"}` (`elicitation/create` or
`sampling/createMessage`), under a key the worker chose; it is stored in the job record while
the job is input_required (shared/jobs/store.py). An answer is `{"result": <the MCP result>}`
or `{"error": {"code", "message"}}` (the caller declined the request itself); the worker
holding the backend's request passes it on (workers/interactive.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mcp_types as types
from pydantic import BaseModel, ValidationError

from shared.errors import ValidationFailed
from shared.jobs.schemas import JobRecord

ELICIT = "elicitation/create"
SAMPLE = "sampling/createMessage"

# Besides a terminal record, what else ends a wait for a job: for example a question the waiter
# can relay (an input_required job with a question it has not handled yet).
Until = Callable[[JobRecord], bool]


def asking_beyond(handled: frozenset[str] | set[str] = frozenset()) -> Until:
    """Ends a wait at a question whose key is not in `handled`."""
    return lambda record: bool(record.asking.keys() - handled)


def result_type(question: dict[str, Any]) -> type[BaseModel]:
    """The MCP result type that answers `question`."""
    method = question.get("method")
    if method == ELICIT:
        return types.ElicitResult
    if method == SAMPLE:
        params = question.get("params") or {}
        with_tools = params.get("tools") or params.get("toolChoice")
        return types.CreateMessageResultWithTools if with_tools else types.CreateMessageResult
    raise ValidationFailed(f"unknown question method {method!r}")


def check_answer(question: dict[str, Any], answer: Any) -> None:
    """422 unless `answer` is an error or a valid result for `question`."""
    if not isinstance(answer, dict) or len(answer) != 1 or not ({"result", "error"} & answer.keys()):
        raise ValidationFailed('an answer is {"result": {...}} or {"error": {"code": int, "message": str}}')
    if "error" in answer:
        error = answer["error"]
        if not (
            isinstance(error, dict)
            and isinstance(error.get("code"), int)
            and isinstance(error.get("message"), str)
        ):
            raise ValidationFailed('an error answer is {"error": {"code": int, "message": str}}')
        return
    try:
        result_type(question).model_validate(answer["result"], by_name=False)
    except ValidationError as exc:
        raise ValidationFailed(
            f"not a valid answer to {question.get('method')}: {exc.errors()[0]['msg']}"
        ) from None


def as_answer(result: BaseModel) -> dict[str, Any]:
    """An MCP result, as the answer stored for the worker."""
    return {"result": result.model_dump(by_alias=True, mode="json", exclude_none=True)}
