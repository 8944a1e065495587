"""What the front door pushes to MCP clients outside a call's own response.

- **Resource subscriptions.** `resources/subscribe` (protocol 2025-11-25 and 2025-06-18)
  resolves the resource on the server in a short read session, records the session as a
  client of the backend subscription in Redis (shared/subscriptions.py) and, if no worker holds
  that yet, runs a `subscribe_resource` job: a worker subscribes on the backend and holds it
  (workers/subscriptions.py). The backend's `notifications/resources/updated` come back through
  the MCP sessions' pub/sub channel to whichever replica holds each client's GET stream.
  `resources/unsubscribe`, or the end of the session, removes the client; the last one out
  makes the holder drop the backend subscription.
- **List changes.** When a virtual server's lists change (a gateway refresh or deletion, a
  membership edit), every API process sends `notifications/{tools,resources,prompts}/list_changed`
  to the sessions of that server whose GET stream it holds (`ReplicatedSessionManager.notify`)
  and to its listen streams.
- **`subscriptions/listen`** (2026-07-28, SEP-2575) serves all of the above on one long-lived
  request: `toolsListChanged`, `promptsListChanged`, `resourcesListChanged`,
  `resourceSubscriptions` (held by workers exactly as `resources/subscribe`, the stream being the
  client `listen:{id}` while it is open), and the tasks extension's `tasksStatus` (SEP-2663: a
  `notifications/tasks/status` carrying the `DetailedTask` whenever a listed task's status
  changes). Every frame carries `_meta["io.modelcontextprotocol/subscriptionId"]`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import anyio
import anyio.streams.memory
import mcp_types as types
from mcp import MCPError
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver.server import require_client_extension
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY
from mcp_types import INTERNAL_ERROR, INVALID_REQUEST
from redis.exceptions import RedisError

from api.mcp.tasks import TASKS_EXTENSION, Tasks, detailed_task_of
from api.mcp.wire import caller_of, failure_text
from shared.errors import MCPQError
from shared.jobs.queue import JobQueue
from shared.jobs.schemas import JobKind, JobStatus, PreparedJob
from shared.subscriptions import LISTEN_PREFIX, RESOURCE_UPDATED, SubscriptionStore

log = logging.getLogger(__name__)

# Makes the read job of a server's resource (resolved and authorized like a read).
PrepareRead = Callable[[ServerRequestContext[Any, Any], str], Awaitable[PreparedJob]]

TASK_STATUS = "notifications/tasks/status"
LIST_CHANGED = {kind: f"notifications/{kind}/list_changed" for kind in ("tools", "resources", "prompts")}
# The listen filter's flag for each list.
_LIST_FLAGS = {
    "tools": "tools_list_changed",
    "resources": "resources_list_changed",
    "prompts": "prompts_list_changed",
}
TASKS_STATUS_KEY = "tasksStatus"  # the tasks extension's key in a listen filter (SEP-2663)
MAX_BUFFERED = 1024  # per listen stream; a client that stops reading loses its stream
SUBSCRIBE_SLACK_S = 30.0


class Push(types.Notification[dict[str, Any], str]):
    """Any server notification, as a listen stream sends it."""


def session_of(ctx: ServerRequestContext[Any, Any]) -> str:
    """The MCP session a request came on (the endpoint only serves known sessions)."""
    request = ctx.request
    headers = getattr(request, "headers", None)
    session_id = headers.get("mcp-session-id") if headers is not None else None
    if not session_id:
        raise MCPError(code=INVALID_REQUEST, message="resources/subscribe needs an MCP session")
    return str(session_id)


@dataclass(eq=False)
class _Stream:
    """One open `subscriptions/listen` request on this process."""

    server_id: str
    lists: frozenset[str]  # "tools", "resources", "prompts"
    uris: frozenset[str]
    send: anyio.streams.memory.MemoryObjectSendStream[tuple[str, dict[str, Any]]]

    def put(self, method: str, params: dict[str, Any]) -> None:
        try:
            self.send.send_nowait((method, params))
        except anyio.WouldBlock:
            log.warning("listen stream backlog full; ending the stream")
            self.send.close()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass


class Pushes:
    def __init__(
        self, queue: JobQueue, store: SubscriptionStore, tasks: Tasks, prepare_read: PrepareRead, ttl_s: float
    ) -> None:
        self.queue, self.store, self.tasks = queue, store, tasks
        self.prepare_read = prepare_read
        self.ttl_s = ttl_s
        self._streams: dict[str, _Stream] = {}

    # --- resources/subscribe and resources/unsubscribe (2025 sessions) ---------------------------

    async def subscribe(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        await self._add(ctx, session_of(ctx), params.uri)
        return types.EmptyResult()

    async def unsubscribe(
        self, ctx: ServerRequestContext[Any, Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        try:
            await self.store.remove(session_of(ctx), params.uri)
        except RedisError as exc:
            raise MCPError(code=INTERNAL_ERROR, message=f"subscriptions unavailable: {exc}") from None
        return types.EmptyResult()

    async def _add(self, ctx: ServerRequestContext[Any, Any], client: str, uri: str) -> None:
        """Make `client` a subscriber of the server's resource `uri`; a worker holds the backend's
        subscription by the time this returns (or the client is removed again and it raises)."""
        read = await self.prepare_read(ctx, uri)
        job = replace(read, kind=JobKind.SUBSCRIBE_RESOURCE)
        try:
            _, held = await self.store.add(client, job.payload["backend"], uri)
        except RedisError as exc:
            raise MCPError(code=INTERNAL_ERROR, message=f"subscriptions unavailable: {exc}") from None
        if held:
            return
        try:
            record = await self.queue.run(
                job, job.backend_timeout_s + SUBSCRIBE_SLACK_S, cancel_if_abandoned=True
            )
        except MCPQError as exc:
            reason: str | None = exc.detail
        else:
            reason = None if record.status is JobStatus.COMPLETED else failure_text(record)
        if reason is not None:
            with contextlib.suppress(RedisError):
                await self.store.remove(client, uri)
            raise MCPError(code=INTERNAL_ERROR, message=f"the backend subscription failed: {reason}")

    # --- subscriptions/listen (2026-07-28) ---------------------------------------------------------

    async def listen(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        subscription_id = ctx.request_id
        if subscription_id is None:
            raise MCPError(code=INVALID_REQUEST, message="subscriptions/listen requires a request id")
        requested = params.notifications
        task_ids = [str(t) for t in (requested.model_extra or {}).get(TASKS_STATUS_KEY) or []]
        if task_ids:
            require_client_extension(ctx, TASKS_EXTENSION)
        meta: dict[str, Any] = {SUBSCRIPTION_ID_META_KEY: subscription_id}
        listen_id = uuid.uuid4().hex
        client = LISTEN_PREFIX + listen_id
        send, recv = anyio.create_memory_object_stream[tuple[str, dict[str, Any]]](MAX_BUFFERED)
        try:
            await self.store.listen_alive(listen_id, math.ceil(self.ttl_s * 1000))
            uris = [
                uri for uri in requested.resource_subscriptions or [] if await self._honors(ctx, client, uri)
            ]
            tasks = [t for t in task_ids if await self._may_see(ctx, t)]
            lists = frozenset(k for k, flag in _LIST_FLAGS.items() if getattr(requested, flag))
            stream = _Stream(str(caller_of(ctx).server.id), lists, frozenset(uris), send)
            self._streams[listen_id] = stream
            honored = types.SubscriptionFilter(
                tools_list_changed=True if "tools" in lists else None,
                prompts_list_changed=True if "prompts" in lists else None,
                resources_list_changed=True if "resources" in lists else None,
                resource_subscriptions=uris or None,
                **({TASKS_STATUS_KEY: tasks} if tasks else {}),
            )
            async with anyio.create_task_group() as group:
                group.start_soon(self._keep_alive, listen_id)
                for task_id in tasks:
                    group.start_soon(self._watch_task, ctx, task_id, stream)
                await ctx.session.send_notification(
                    types.SubscriptionsAcknowledgedNotification(
                        params=types.SubscriptionsAcknowledgedNotificationParams(
                            notifications=honored, _meta=meta
                        )
                    ),
                    related_request_id=subscription_id,
                )
                async for method, body in recv:
                    await ctx.session.send_notification(
                        Push(method=method, params={**body, "_meta": meta}),  # type: ignore[arg-type]
                        related_request_id=subscription_id,
                    )
                group.cancel_scope.cancel()
        finally:
            self._streams.pop(listen_id, None)
            send.close()
            recv.close()
            with anyio.CancelScope(shield=True), contextlib.suppress(RedisError):
                await self.store.listen_ended(listen_id)
        return types.SubscriptionsListenResult(_meta=meta)

    async def _honors(self, ctx: ServerRequestContext[Any, Any], client: str, uri: str) -> bool:
        """Subscribe the stream to `uri`; a resource the server lacks (or that cannot be
        subscribed on its backend) is left out of the acknowledgement."""
        try:
            await self._add(ctx, client, uri)
        except MCPError as exc:
            log.info("listen: %s not subscribed: %s", uri, exc.message)
            return False
        return True

    async def _may_see(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> bool:
        try:
            await self.tasks.record(ctx, task_id)
        except MCPError:
            return False
        return True

    async def _keep_alive(self, listen_id: str) -> None:
        """Keep the stream's subscriptions alive in Redis while it is open (a lease: if this
        process dies, they lapse with it)."""
        while True:
            await anyio.sleep(self.ttl_s / 3)
            with contextlib.suppress(RedisError):
                await self.store.listen_alive(listen_id, math.ceil(self.ttl_s * 1000))

    async def _watch_task(self, ctx: ServerRequestContext[Any, Any], task_id: str, stream: _Stream) -> None:
        principal = caller_of(ctx).principal
        try:
            async for record in self.tasks.status_changes(principal, task_id, include_current=True):
                stream.put(TASK_STATUS, detailed_task_of(record, self.tasks.ttl_ms))
        except MCPQError:  # the task expired meanwhile
            return

    # --- deliveries from pub/sub ------------------------------------------------------------------

    def deliver(self, listen_id: str, method: str, params: dict[str, Any] | None) -> None:
        """A message for a listen stream (`listen:{id}`) that may be open here."""
        stream = self._streams.get(listen_id)
        if stream is not None and method == RESOURCE_UPDATED and (params or {}).get("uri") is not None:
            stream.put(method, dict(params or {}))

    def lists_changed(self, server_id: str, kinds: list[str]) -> None:
        """A server's lists changed: tell this process's listen streams that asked."""
        for stream in list(self._streams.values()):
            if stream.server_id == server_id:
                for kind in kinds:
                    if kind in stream.lists:
                        stream.put(LIST_CHANGED[kind], {})
