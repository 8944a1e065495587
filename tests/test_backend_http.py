"""workers/backend_http.py's `AiohttpTransport` under httpx2, against raw HTTP servers on loopback:
what goes out, what comes back, when a connection is reused, and which httpx2 error each failure
becomes (the SDK, `failure_response` and shared/backend_errors read httpx2's errors)."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from workers.backend_http import NOT_SENT, AiohttpTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawServer:
    """A loopback TCP server running `handler` on each connection; it counts connections and
    keeps each request's head as received."""

    handler: Handler
    accepted: int = 0
    heads: list[bytes] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self, tls: ssl.SSLContext | None = None) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.lower().split(b"\r\n")
                if line.startswith(b"content-length:")
            ),
            0,
        )
        return await reader.readexactly(length)

    async def reply(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Read one request and answer it with `data`, as given."""
        await self.read_request(reader)
        writer.write(data)
        await writer.drain()


def answer(body: bytes, *headers: bytes) -> bytes:
    head = [
        b"HTTP/1.1 200 OK",
        b"content-type: application/json",
        b"content-length: %d" % len(body),
        *headers,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@pytest.fixture
async def transport() -> AsyncIterator[AiohttpTransport]:
    made = AiohttpTransport(ssl.create_default_context(), max_connections=10, keepalive_s=30)
    yield made
    await made.aclose()


Serve = Callable[..., Awaitable[tuple[RawServer, str]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Starts a `RawServer` on a free port (`await serve(handler, tls=None)`): the server and its
    URL. Every server started is closed after the test."""
    started: list[RawServer] = []

    async def start(handler: Handler, tls: ssl.SSLContext | None = None) -> tuple[RawServer, str]:
        server = RawServer(handler)
        started.append(server)
        port = await server.start(tls)
        return server, f"{'https' if tls else 'http'}://127.0.0.1:{port}/mcp"

    yield start
    for server in started:
        if server.server is not None:
            server.server.close()
            await server.server.wait_closed()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mcpq test backend")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_requests_go_out_as_httpx2_built_them_and_read_bodies_reuse_the_connection(
    serve: Serve,
    transport: AiohttpTransport,
) -> None:
    bodies: list[bytes] = []

    async def echo_back(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            body = await server.read_request(reader)
            bodies.append(body)
            writer.write(answer(b'{"ok":true}'))
            await writer.drain()

    server, url = await serve(echo_back)
    async with httpx2.AsyncClient(transport=transport, headers={"x-gateway": "g1"}) as client:
        for i in range(3):
            response = await client.post(url, json={"n": i})
            assert response.status_code == 200
            assert response.json() == {"ok": True}
    assert bodies == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    assert server.accepted == 1  # one connection for all three
    head = server.heads[0].lower()
    assert head.startswith(b"post /mcp http/1.1\r\n")
    assert head.count(b"content-length:") == 1
    assert head.count(b"\r\nhost: 127.0.0.1:") == 1
    assert b"\r\nx-gateway: g1\r\n" in head


async def test_a_body_closed_before_its_end_does_not_leave_its_connection_in_the_pool(
    serve: Serve,
    transport: AiohttpTransport,
) -> None:
    async def long_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.reply(reader, writer, answer(b"x" * 200_000))

    server, url = await serve(long_answer)
    async with httpx2.AsyncClient(transport=transport) as client:
        async with client.stream("POST", url, content=b"{}") as response:
            async for _ in response.aiter_raw():
                break  # stop reading: the rest of the body is still on the wire
        response = await client.post(url, content=b"{}")
        assert len(response.content) == 200_000
    assert server.accepted == 2


async def test_a_compressed_body_is_handed_over_as_sent_and_httpx2_decodes_it(
    serve: Serve,
    transport: AiohttpTransport,
) -> None:
    async def gzipped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.reply(reader, writer, answer(gzip.compress(b'{"zipped":1}'), b"content-encoding: gzip"))

    server, url = await serve(gzipped)
    async with httpx2.AsyncClient(transport=transport) as client:
        response = await client.post(url, content=b"{}")
    assert response.json() == {"zipped": 1}


async def test_a_refused_connection_is_a_connect_error_which_was_not_sent(
    serve: Serve,
    transport: AiohttpTransport,
) -> None:
    server, url = await serve(lambda reader, writer: asyncio.sleep(0))
    assert server.server is not None
    server.server.close()
    await server.server.wait_closed()
    async with httpx2.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx2.ConnectError) as raised:
            await client.post(url, content=b"{}")
    assert isinstance(raised.value, NOT_SENT)


async def test_an_answer_that_is_not_http_is_a_protocol_error(
    serve: Serve, transport: AiohttpTransport
) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.reply(reader, writer, b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

    server, url = await serve(garbage)
    async with httpx2.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx2.RemoteProtocolError) as raised:
            await client.post(url, content=b"{}")
    assert not isinstance(raised.value, NOT_SENT)


async def test_a_close_before_the_answer_or_inside_the_body_is_a_protocol_error(
    serve: Serve,
    transport: AiohttpTransport,
) -> None:
    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)

    async def close_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.reply(reader, writer, answer(b"x" * 100)[:-60])

    async with httpx2.AsyncClient(transport=transport) as client:
        for handler in (close_at_once, close_mid_body):
            server, url = await serve(handler)
            with pytest.raises(httpx2.RemoteProtocolError):
                await client.post(url, content=b"{}")


async def test_the_read_timeout_of_a_request_applies_to_its_reads(
    serve: Serve, transport: AiohttpTransport
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        await asyncio.sleep(5)

    server, url = await serve(silent)
    async with httpx2.AsyncClient(transport=transport) as client:
        started = asyncio.get_running_loop().time()
        with pytest.raises(httpx2.ReadTimeout):
            await client.post(url, content=b"{}", timeout=httpx2.Timeout(5, read=0.3))
        assert asyncio.get_running_loop().time() - started < 3


async def test_tls_is_verified_against_the_context_given(serve: Serve, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.reply(reader, writer, answer(b'{"tls":true}'))

    server, url = await serve(answer_ok, server_tls)
    assert url.startswith("https://")
    trusting = AiohttpTransport(
        ssl.create_default_context(cafile=str(cert)), max_connections=10, keepalive_s=30
    )
    async with httpx2.AsyncClient(transport=trusting) as client:
        for _ in range(2):
            assert (await client.post(url, content=b"{}")).json() == {"tls": True}
    assert server.accepted == 1  # the TLS connection was reused
    # A context that does not trust the certificate refuses the connection: nothing was sent.
    default = AiohttpTransport(ssl.create_default_context(), max_connections=10, keepalive_s=30)
    async with httpx2.AsyncClient(transport=default) as client:
        with pytest.raises(httpx2.ConnectError, match="certificate") as raised:
            await client.post(url, content=b"{}")
    assert isinstance(raised.value, NOT_SENT)
    assert len(server.heads) == 2
