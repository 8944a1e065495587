"""The SSRF guard, unit-tested with name resolution stubbed: nothing here opens a connection."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from shared.config import Settings, parse_networks
from shared.gateways.netguard import RefusedAddress, check_url, refusal

PUBLIC = "93.184.215.14"  # documentation-free public address (example.com's)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if anything tries to connect or resolve for real."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


class StubResolver:
    """Answers like loop.getaddrinfo from a fixed table and records what it was asked."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int, **kwargs: Any) -> list[tuple[Any, ...]]:
        self.asked.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out: list[tuple[Any, ...]] = []
        for addr in self.table[host]:
            family = socket.AF_INET6 if ":" in addr else socket.AF_INET
            sockaddr = (addr, port, 0, 0) if family == socket.AF_INET6 else (addr, port)
            out.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
        return out


REFUSED = {
    "169.254.169.254": "cloud metadata",
    "10.0.0.1": "private",
    "192.168.1.1": "private",
    "fd00::1": "private",
    "::1": "loopback",
}


@pytest.mark.parametrize(("address", "reason"), REFUSED.items())
async def test_refused_literals(address: str, reason: str) -> None:
    resolver = StubResolver({})
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(RefusedAddress, match=reason):
        await check_url(f"http://{host}:8080/mcp", (), resolver)
    assert resolver.asked == []  # a literal address is checked as is, never resolved


@pytest.mark.parametrize(("address", "reason"), REFUSED.items())
async def test_refused_when_a_name_resolves_there(address: str, reason: str) -> None:
    resolver = StubResolver({"backend.example": [address]})
    with pytest.raises(RefusedAddress, match=reason):
        await check_url("https://backend.example/mcp", (), resolver)
    assert resolver.asked == [("backend.example", 443)]


async def test_any_refused_address_refuses_the_name() -> None:
    resolver = StubResolver({"mixed.example": [PUBLIC, "10.0.0.1"]})
    with pytest.raises(RefusedAddress, match=r"10\.0\.0\.1"):
        await check_url("http://mixed.example/mcp", (), resolver)


async def test_public_name_is_allowed() -> None:
    resolver = StubResolver({"public.example": [PUBLIC, "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]})
    addresses = await check_url("http://public.example:9000/mcp", (), resolver)
    assert [str(a) for a in addresses] == [PUBLIC, "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    assert resolver.asked == [("public.example", 9000)]


async def test_unresolvable_name_is_refused() -> None:
    with pytest.raises(RefusedAddress, match="cannot be resolved"):
        await check_url("http://nowhere.example/mcp", (), StubResolver({}))


async def test_allowlist_admits_exactly_its_networks() -> None:
    allowed = parse_networks("127.0.0.1/32, 10.1.0.0/16")
    resolver = StubResolver({"internal.example": ["10.1.2.3"]})
    await check_url("http://127.0.0.1:1/mcp", allowed, resolver)
    await check_url("http://internal.example/mcp", allowed, resolver)
    for refused in ("http://127.0.0.2:1/mcp", "http://[::1]:1/mcp", "http://10.2.0.1/mcp"):
        with pytest.raises(RefusedAddress):
            await check_url(refused, allowed, resolver)


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0",  # unspecified
        "::",
        "224.0.0.1",  # multicast
        "100.64.0.1",  # shared address space (CGNAT)
        "100.100.100.200",  # Alibaba metadata
        "fd00:ec2::254",  # AWS IPv6 metadata
        "169.254.1.1",  # link-local
        "fe80::1",
        "240.0.0.1",  # reserved
        "::ffff:10.0.0.1",  # IPv4-mapped private
        "::ffff:169.254.169.254",
        "172.16.0.1",
        "127.8.8.8",
    ],
)
def test_other_non_public_ranges_are_refused(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), ()) is not None


def test_public_addresses_pass() -> None:
    assert refusal(ipaddress.ip_address(PUBLIC), ()) is None
    assert refusal(ipaddress.ip_address("2606:4700:4700::1111"), ()) is None


def test_the_default_allowlist_is_empty_and_bad_cidrs_fail_at_startup() -> None:
    assert Settings().allowed_networks == ()
    with pytest.raises(ValidationError):
        Settings(allowed_backend_networks="10.0.0.0/33")
