"""A loopback TCP proxy in front of a real backend: counts the connections it accepts, and can
cut them (all, or the one carrying given bytes), as a network or a restarting server would."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    sent: bytearray = field(default_factory=bytearray)  # what the client sent, for `cut_carrying`

    def cut(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()  # a reset, not a polite close


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.accepted = 0
        self.port = 0
        self.links: list[Link] = []
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen: on a free port the first time, on the same port again after `refuse`."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        link = Link(writer, up_writer)
        self.links.append(link)
        for task in (self._pump(reader, up_writer, link.sent), self._pump(up_reader, writer, None)):
            pump = asyncio.create_task(task)
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: bytearray | None
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(65536):
                if log is not None:
                    log.extend(chunk)
                writer.write(chunk)
                await writer.drain()
        writer.close()

    async def refuse(self) -> None:
        """Stop listening (new connections are refused); connections already open carry on."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def cut_all(self) -> int:
        links, self.links = self.links, []
        for link in links:
            link.cut()
        return len(links)

    def cut_carrying(self, marker: bytes) -> int:
        """Cut the connections whose client sent `marker` (a request's unique argument)."""
        hit = [link for link in self.links if marker in link.sent]
        for link in hit:
            link.cut()
            self.links.remove(link)
        return len(hit)

    async def close(self) -> None:
        self.cut_all()
        await self.refuse()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
