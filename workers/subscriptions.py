"""The backend resource subscriptions this worker holds (see shared/subscriptions.py).

A worker holds a subscription on a long-lived MCP session of its own per backend (`_Link`),
opened through the session pool's `connect` (same headers, SSRF guard and transports). Call
jobs never use it, so the pool's idle reaping and retiring of broken sessions never drops a
subscription. On a 2025-era backend each URI is a `resources/subscribe` on that session; on a
2026-07-28 backend the session holds one `subscriptions/listen` stream for every URI, opened
again when the set changes. Each `notifications/resources/updated` is fanned out to the
subscribed clients through Redis in one script (`SubscriptionStore.fan_out`).

Who holds what is in Redis, so another worker takes a subscription over:
- at once, when its holder stops cleanly (it lets go and says so on the channel);
- when its holder died, once the holder's beat has lapsed (`worker_dead_after_s`) and a live
  worker's next check runs (each worker checks every `worker_dead_after_s / 2`, and whenever the
  channel says something changed);
- when the backend session breaks, the same worker subscribes again on a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

import mcp_types as types
from mcp import Client
from mcp.shared.subscriptions import ResourceUpdated

from shared.config import Settings
from shared.jobs.schemas import BackendSpec
from shared.jobs.store import JobStore
from shared.subscriptions import SubscriptionStore, Wanted
from workers.sessions import SessionPool, describe, owner_ended

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Link:
    """One backend session carrying every subscription this worker holds on that backend."""

    spec: BackendSpec
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    client: Client | None = None
    keys: set[str] = field(default_factory=set)
    owner: asyncio.Task[None] | None = None
    listening: asyncio.Task[None] | None = None  # 2026-07-28: the current listen stream

    @property
    def modern(self) -> bool:
        return self.client is not None and not self.client.protocol_version.startswith("2025-")


def _covers(subscribed: str, updated: str) -> bool:
    """An update of `updated` concerns a subscription to `subscribed` (itself or a sub-resource)."""
    return updated == subscribed or updated.startswith(subscribed.rstrip("/") + "/")


async def _send(client: Client, request: types.SubscribeRequest | types.UnsubscribeRequest) -> None:
    """`resources/subscribe` or `unsubscribe` (2025-era backends; the SDK marks its helpers
    deprecated, as the 2026-07-28 revision replaced them with `subscriptions/listen`)."""
    await client.session.send_request(request, types.EmptyResult)


class SubscriptionHolder:
    def __init__(
        self, store: SubscriptionStore, jobs: JobStore, pool: SessionPool, settings: Settings, worker_id: str
    ) -> None:
        self.store, self.jobs, self.pool = store, jobs, pool
        self.settings = settings
        self.worker_id = worker_id
        self.held: dict[str, Wanted] = {}
        self._links: dict[str, _Link] = {}
        self._lock = asyncio.Lock()
        self._check = asyncio.Event()

    # --- what jobs, pub/sub and the check loop call --------------------------------------------

    async def take(self, wanted: Wanted) -> None:
        """Hold `wanted` on its backend unless a live worker does; raises if the backend refuses."""
        async with self._lock:
            await self._take(wanted)

    def changed(self, _: str = "") -> None:
        """Pub/sub: a subscription was wanted or dropped; check at once."""
        self._check.set()

    async def check_forever(self) -> None:
        """Check the registry whenever told to, and every `worker_dead_after_s / 2` (a dead
        holder announces nothing: only its lapsed beat tells)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._check.wait(), self.settings.worker_dead_after_s / 2)
            self._check.clear()
            try:
                await self.check()
            except Exception:  # Redis away: the next round tries again
                log.warning("subscription check failed", exc_info=True)

    async def check(self) -> None:
        """Drop what is no longer wanted; take what no live worker holds."""
        wanted = {w.key: w for w in await self.store.wanted()}
        async with self._lock:
            for key in [k for k in self.held if k not in wanted]:
                await self._drop(key)
            if not wanted.keys() - self.held.keys():
                return
            holders = await self.store.holders()
            live = set(await self.jobs.live_workers())
            for key, item in wanted.items():
                holder = holders.get(key)
                if key in self.held or (holder is not None and holder != self.worker_id and holder in live):
                    continue
                try:
                    await self._take(item)
                except Exception as exc:
                    log.warning(
                        "subscription to %s on %s not taken: %s",
                        item.uri,
                        item.backend["gateway"],
                        describe(exc),
                    )

    async def close(self) -> None:
        """Stopping: let go of every subscription and say so, so another worker takes them now."""
        async with self._lock:
            keys = list(self.held)
            self.held.clear()
            for key in keys:
                with contextlib.suppress(Exception):
                    await self.store.release(key, self.worker_id)
                    await self.store.redis.publish(self.store.channel, key)
            for link in list(self._links.values()):
                await self._close_link(link)

    # --- holding --------------------------------------------------------------------------------

    async def _take(self, wanted: Wanted) -> None:
        if wanted.key in self.held:
            return
        live_since = int((time.time() - self.settings.worker_dead_after_s) * 1000)
        if not await self.store.claim(wanted.key, self.worker_id, live_since):
            return
        try:
            link = await self._link(wanted.backend)
            link.keys.add(wanted.key)
            self.held[wanted.key] = wanted
            try:
                await self._subscribe(link, wanted.uri)
            except BaseException:
                link.keys.discard(wanted.key)
                self.held.pop(wanted.key, None)
                if not link.keys:
                    await self._close_link(link)
                raise
        except BaseException:
            with contextlib.suppress(Exception):
                await self.store.release(wanted.key, self.worker_id)
            raise
        log.info("holding the subscription to %s on %s", wanted.uri, wanted.backend["gateway"])

    async def _drop(self, key: str) -> None:
        wanted = self.held.pop(key, None)
        if wanted is None:
            return
        await self.store.release(key, self.worker_id)
        link = self._links.get(self.pool.key(wanted.backend))
        if link is None:
            return
        link.keys.discard(key)
        try:
            if link.modern:
                if link.keys:
                    await self._listen(link)
            elif link.client is not None and not self._uri_held(link, wanted.uri):
                unsubscribe = types.UnsubscribeRequest(params=types.UnsubscribeRequestParams(uri=wanted.uri))
                await _send(link.client, unsubscribe)
        except Exception as exc:  # the session may be gone: nothing stays subscribed then
            log.info("unsubscribe from %s on %s: %s", wanted.uri, wanted.backend["gateway"], describe(exc))
        if not link.keys:
            await self._close_link(link)
        log.info("dropped the subscription to %s on %s", wanted.uri, wanted.backend["gateway"])

    def _uri_held(self, link: _Link, uri: str) -> bool:
        return any(self.held[k].uri == uri for k in link.keys if k in self.held)

    async def _subscribe(self, link: _Link, uri: str) -> None:
        assert link.client is not None
        if link.modern:
            await self._listen(link)
        else:
            await _send(link.client, types.SubscribeRequest(params=types.SubscribeRequestParams(uri=uri)))

    # --- the backend sessions ---------------------------------------------------------------------

    async def _link(self, spec: BackendSpec) -> _Link:
        key = self.pool.key(spec)
        link = self._links.get(key)
        if link is not None and link.owner is not None and not link.owner.done():
            return link
        link = await self._open(key, spec, "auto")
        caps = link.client.server_capabilities if link.client is not None else None
        if link.modern and not (caps and caps.resources and caps.resources.subscribe):
            # A 2026-07-28 backend that serves no `subscriptions/listen` may still take
            # `resources/subscribe` on a session of the handshake era.
            await self._close_link(link)
            link = await self._open(key, spec, "legacy")
        return link

    async def _open(self, key: str, spec: BackendSpec, mode: str) -> _Link:
        link = self._links[key] = _Link(spec)
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        name = f"mcp-subscriptions {spec['gateway']}"
        link.owner = asyncio.create_task(self._own(key, link, mode, ready), name=name)
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.settings.mcp_connect_timeout_s)
        except BaseException:
            await self._close_link(link)
            raise
        return link

    async def _own(self, key: str, link: _Link, mode: str, ready: asyncio.Future[None]) -> None:
        async def on_message(message: types.ServerNotification | Exception) -> None:
            # On a 2026-07-28 link the listen stream hands the same updates on (`_listen_on`).
            if isinstance(message, types.ResourceUpdatedNotification) and not link.modern:
                await self._updated(link, message.params.uri)

        try:
            async with self.pool.connect(link.spec, mode, message_handler=on_message) as client:
                link.client = client
                ready.set_result(None)
                await link.stop.wait()
        except BaseException as exc:
            owner_ended(ready, exc, f"subscription session to {link.spec['gateway']}")
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            if self._links.get(key) is link:
                del self._links[key]
            if link.listening is not None:
                link.listening.cancel()
            if not link.stop.is_set():
                # The backend session broke: what it carried is subscribed again on a new one
                # (this worker still holds it in Redis, so the check takes it again).
                for held in link.keys:
                    self.held.pop(held, None)
                self._check.set()

    async def _close_link(self, link: _Link) -> None:
        link.stop.set()
        if link.listening is not None:
            link.listening.cancel()
            with contextlib.suppress(BaseException):
                await link.listening
        if link.owner is not None:
            try:
                await asyncio.wait_for(link.owner, 5)
            except BaseException:
                link.owner.cancel()

    async def _listen(self, link: _Link) -> None:
        """2026-07-28: (re)open the link's listen stream for every URI it holds; returns once the
        backend acknowledged it."""
        if link.listening is not None:
            link.listening.cancel()
            with contextlib.suppress(BaseException):
                await link.listening
        uris = sorted({self.held[k].uri for k in link.keys if k in self.held})
        if not uris:
            return
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        link.listening = asyncio.create_task(self._listen_on(link, uris, ready))
        await asyncio.wait_for(asyncio.shield(ready), link.spec["timeout_s"])

    async def _listen_on(self, link: _Link, uris: list[str], ready: asyncio.Future[None]) -> None:
        assert link.client is not None
        try:
            async with link.client.listen(resource_subscriptions=uris) as stream:
                ready.set_result(None)
                async for event in stream:
                    if isinstance(event, ResourceUpdated):
                        await self._updated(link, event.uri)
        except asyncio.CancelledError:
            if not ready.done():
                ready.cancel()
            raise
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
                return
            # The stream was lost: end the session, so what it carried is subscribed again.
            log.info("listen stream to %s ended: %s", link.spec["gateway"], describe(exc))
            link.stop.set()
            return
        if not link.stop.is_set():  # the backend closed the stream gracefully: listen again
            link.stop.set()

    async def _updated(self, link: _Link, uri: str) -> None:
        """The backend says `uri` changed: tell every client of each subscription it concerns."""
        for key in list(link.keys):
            wanted = self.held.get(key)
            if wanted is None or not _covers(wanted.uri, uri):
                continue
            try:
                reached = await self.store.fan_out(key, self.worker_id, uri)
            except Exception:
                log.warning("update of %s not handed on", uri, exc_info=True)
                continue
            if reached == 0:  # every client has gone: the registry dropped it
                self._check.set()
