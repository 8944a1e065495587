"""Resources as a catalog kind: named `{gateway}:{uri}`. A template is read at a concrete URI that
fits it; MCP clients name a resource by its URI, which may be a template's instance."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from sqlalchemy import ColumnElement, or_

from shared.errors import InvalidArguments, ValidationFailed
from shared.gateways.service import backend_spec
from shared.items.kind import CompletionRequest, ItemKind, JobSpec, completion_job
from shared.jobs.schemas import JobKind
from shared.models import Gateway, Resource, server_resources
from shared.resources.schemas import PlainResource, ResourceOut


def to_out(resource: Resource, gateway: Gateway) -> ResourceOut:
    return ResourceOut(
        id=resource.id,
        ref=f"{gateway.name}:{resource.uri}",
        uri=resource.uri,
        is_template=resource.is_template,
        name=resource.name,
        description=resource.description,
        mime_type=resource.mime_type,
        gateway=gateway.name,
        gateway_id=gateway.id,
        title=resource.title,
        size=resource.size,
        annotations=resource.annotations,
        icons=resource.icons,
        meta=resource.meta,
    )


def to_plain(resource: Resource, gateway: Gateway) -> PlainResource:
    return PlainResource(
        id=str(resource.id),
        uri=resource.uri,
        is_template=resource.is_template,
        ref=f"{gateway.name}:{resource.uri}",
        backend=backend_spec(gateway),
        team_id=gateway.team_id,
        public=gateway.visibility == "public",
    )


@lru_cache(maxsize=1024)
def _template_regex(template: str) -> re.Pattern[str]:
    """An RFC 6570 URI template as a regex: `{var}` matches one path segment, `{+var}`, `{#var}`
    and the other operators match anything."""
    pattern = ""
    for literal, expression in re.findall(r"([^{]*)(\{[^}]*\})?", template):
        pattern += re.escape(literal)
        if expression:
            pattern += "[^/?#]+" if expression[1:2].isalnum() or expression[1:2] == "_" else ".*"
    return re.compile(pattern)


def template_fits(template: str, uri: str) -> bool:
    return _template_regex(template).fullmatch(uri) is not None


def concrete_uri(resource: PlainResource, uri: str | None) -> str:
    """The URI a read asks the backend for: a template needs one that fits it (422 otherwise)."""
    if resource.is_template:
        if uri is None:
            raise ValidationFailed(f"uri: {resource.ref} is a template; give the concrete uri to read")
        if not template_fits(resource.uri, uri):
            raise ValidationFailed(f"uri: {uri!r} does not match the template {resource.uri!r}")
        return uri
    if uri is not None and uri != resource.uri:
        raise ValidationFailed(f"uri: {resource.ref} is not a template; its uri is {resource.uri!r}")
    return resource.uri


def to_job(resource: PlainResource, uri: str | None) -> JobSpec:
    concrete = concrete_uri(resource, uri)
    # Reading has no side effects, so a read interrupted by a dying worker is simply run again.
    return JobSpec(
        fields={"uri": concrete}, item=f"{resource.backend['gateway']}:{concrete}", retry_safe=True
    )


def template_variables(template: str) -> list[str]:
    """The variables of an RFC 6570 URI template, in order: `{a}`, `{+a}`, `{?a,b*}`, `{a:3}`."""
    names: list[str] = []
    for expression in re.findall(r"\{([^}]*)\}", template):
        names += [part.split(":")[0].rstrip("*") for part in expression.lstrip("+#./;?&").split(",")]
    return names


def to_completion(resource: PlainResource, request: CompletionRequest) -> JobSpec:
    if not resource.is_template:
        raise ValidationFailed(f"{resource.ref} is not a template: only a template's variables complete")
    names = template_variables(resource.uri)
    if request.argument not in names:
        raise InvalidArguments(
            f"the template {resource.ref} has no variable {request.argument!r}", extra={"arguments": names}
        )
    return completion_job({"type": "ref/resource", "uri": resource.uri}, request, resource.ref)


def on_server(uri: str) -> ColumnElement[bool]:
    return or_(Resource.uri == uri, Resource.is_template.is_(True))


def pick(candidates: Sequence[PlainResource], uri: str) -> PlainResource | None:
    """The resource or template with exactly that URI (a completion names a template by its URI
    template), else the first template (in the server's order) it fits."""
    exact = next((r for r in candidates if r.uri == uri), None)
    return exact or next((r for r in candidates if r.is_template and template_fits(r.uri, uri)), None)


RESOURCES: ItemKind[Resource, PlainResource, ResourceOut, str | None] = ItemKind(
    name="resource",
    plural="resources",
    job_kind=JobKind.READ_RESOURCE,
    model=Resource,
    key=Resource.uri,
    separator=":",
    members=server_resources,
    to_out=to_out,
    to_plain=to_plain,
    to_job=to_job,
    on_server=on_server,
    pick=pick,
    to_completion=to_completion,
)
