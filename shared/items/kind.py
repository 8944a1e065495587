"""What differs between tools, resources and prompts, described once per kind.

The pipeline (shared/items/service.py) and the queries (shared/items/repository.py) are written
once for all kinds; each kind (shared/tools/kind.py, shared/resources/kind.py,
shared/prompts/kind.py) says only how its rows are named, shown, copied into plain values, and
turned into a job.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Table
from sqlalchemy.orm import InstrumentedAttribute

from shared.jobs.schemas import BackendSpec, JobKind
from shared.models import Gateway, Prompt, Resource, Tool


class PlainItem(Protocol):
    """What every kind's plain snapshot carries (copied out of the rows before any slow I/O)."""

    @property
    def backend(self) -> BackendSpec: ...

    @property
    def team_id(self) -> uuid.UUID: ...

    @property
    def public(self) -> bool: ...


Row = TypeVar("Row", Tool, Resource, Prompt)
Plain = TypeVar("Plain", bound=PlainItem)
Out = TypeVar("Out", bound=BaseModel)
Request = TypeVar("Request")


@dataclass(frozen=True)
class JobSpec:
    """A kind's part of a job: its payload fields, what the job acts on, and whether it may run twice."""

    fields: dict[str, Any]
    item: str
    retry_safe: bool
    # Another operation on the item than the kind's own job (a completion); None: the kind's.
    job_kind: JobKind | None = None


@dataclass(frozen=True)
class CompletionRequest:
    """completion/complete for one argument of an item: its name, the value typed so far, and the
    arguments already resolved."""

    argument: str
    value: str
    context: dict[str, str] = field(default_factory=dict)


def completion_job(ref: dict[str, str], request: CompletionRequest, item: str) -> JobSpec:
    """The job that completes one argument of the item `ref` names (MCP's wire form of the ref).
    Completing has no side effects: it is safe to run again."""
    return JobSpec(
        fields={
            "ref": ref,
            "argument": {"name": request.argument, "value": request.value},
            "context": request.context,
        },
        item=item,
        retry_safe=True,
        job_kind=JobKind.COMPLETE,
    )


def _first(candidates: Sequence[Any], key: str) -> Any | None:
    return candidates[0] if candidates else None


@dataclass(frozen=True)
class ItemKind(Generic[Row, Plain, Out, Request]):
    # "tool": in messages, cache keys and metric labels; `plural` names the kind in bodies.
    name: str
    plural: str
    job_kind: JobKind
    model: type[Row]
    # The column a ref names after its gateway: `{gateway}{separator}{key}`. Gateway names contain
    # neither `.` nor `:`, so the first separator splits a ref.
    key: InstrumentedAttribute[str]
    separator: str
    # A virtual server's members of this kind (server_id, <name>_id, position).
    members: Table
    to_out: Callable[[Row, Gateway], Out]
    to_plain: Callable[[Row, Gateway], Plain]
    # Checks a request against the item (422 with what is wrong) and makes the kind's job part.
    to_job: Callable[[Plain, Request], JobSpec]
    # The MCP front door names an item by its key within a server. Which rows may answer to
    # `name` (resources: the URI itself, or any template), and which of them does.
    on_server: Callable[[str], ColumnElement[bool]] | None = None
    pick: Callable[[Sequence[Plain], str], Plain | None] = field(default=_first)
    # Checks a completion request against the item and makes its job; None: the kind has no
    # arguments to complete (MCP completes prompt and resource-template arguments).
    to_completion: Callable[[Plain, CompletionRequest], JobSpec] | None = None

    def server_filter(self, name: str) -> ColumnElement[bool]:
        return self.on_server(name) if self.on_server is not None else self.key == name

    def key_of(self, row: Row) -> str:
        value: str = getattr(row, self.key.key)
        return value

    @property
    def member_column(self) -> str:
        return f"{self.name}_id"
