"""Prompts as a catalog kind: named `{gateway}.{prompt}`, rendered with string arguments whose
required ones are checked before anything is enqueued."""

from __future__ import annotations

from shared.errors import InvalidArguments
from shared.gateways.service import backend_spec
from shared.items.kind import CompletionRequest, ItemKind, JobSpec, completion_job
from shared.jobs.schemas import JobKind
from shared.models import Gateway, Prompt, server_prompts
from shared.prompts.schemas import PlainPrompt, PromptOut


def to_out(prompt: Prompt, gateway: Gateway) -> PromptOut:
    return PromptOut(
        id=prompt.id,
        name=prompt.name,
        qualified_name=f"{gateway.name}.{prompt.name}",
        gateway=gateway.name,
        gateway_id=gateway.id,
        description=prompt.description,
        arguments=prompt.arguments,
        title=prompt.title,
        icons=prompt.icons,
        meta=prompt.meta,
    )


def to_plain(prompt: Prompt, gateway: Gateway) -> PlainPrompt:
    return PlainPrompt(
        id=str(prompt.id),
        name=prompt.name,
        qualified_name=f"{gateway.name}.{prompt.name}",
        arguments=tuple((str(a.get("name")), bool(a.get("required"))) for a in prompt.arguments or []),
        backend=backend_spec(gateway),
        team_id=gateway.team_id,
        public=gateway.visibility == "public",
    )


def check_arguments(prompt: PlainPrompt, arguments: dict[str, str]) -> None:
    """Required arguments present, no unknown ones."""
    declared = {name for name, _ in prompt.arguments}
    missing = [name for name, required in prompt.arguments if required and name not in arguments]
    unknown = sorted(set(arguments) - declared)
    if missing or unknown:
        problems = [f"missing required argument {n!r}" for n in missing]
        problems += [f"unknown argument {n!r}" for n in unknown]
        raise InvalidArguments(
            f"arguments do not fit the prompt {prompt.qualified_name}: {'; '.join(problems)}",
            extra={"missing": missing, "unknown": unknown},
        )


def to_job(prompt: PlainPrompt, arguments: dict[str, str]) -> JobSpec:
    check_arguments(prompt, arguments)
    # Rendering a prompt has no side effects: safe to run again after a worker dies.
    return JobSpec(
        fields={"prompt": prompt.name, "arguments": arguments}, item=prompt.qualified_name, retry_safe=True
    )


def to_completion(prompt: PlainPrompt, request: CompletionRequest) -> JobSpec:
    names = [name for name, _ in prompt.arguments]
    if request.argument not in names:
        raise InvalidArguments(
            f"the prompt {prompt.qualified_name} has no argument {request.argument!r}",
            extra={"arguments": names},
        )
    return completion_job({"type": "ref/prompt", "name": prompt.name}, request, prompt.qualified_name)


PROMPTS: ItemKind[Prompt, PlainPrompt, PromptOut, dict[str, str]] = ItemKind(
    name="prompt",
    plural="prompts",
    job_kind=JobKind.GET_PROMPT,
    model=Prompt,
    key=Prompt.name,
    separator=".",
    members=server_prompts,
    to_out=to_out,
    to_plain=to_plain,
    to_job=to_job,
    to_completion=to_completion,
)
