"""SSRF guard: a gateway URL must resolve only to public addresses, or to ones the allowlist admits.

The check resolves the host name (it does not trust the literal URL) and refuses the URL if ANY
address it resolves to is refused: loopback, private, link-local, shared (CGNAT), unspecified,
multicast, reserved and other non-global ranges, and the cloud metadata endpoints. The allowlist
(`MCPQ_ALLOWED_BACKEND_NETWORKS`) admits whatever falls inside its CIDRs.

Residual risk: DNS rebinding. The name is resolved here and again by the HTTP client when a
worker connects; a name whose answer changes in between can still reach a refused address.
Workers repeat the check when they open a session, which narrows the window but cannot close it
(pinning the resolved address into the connection is not done).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from shared.config import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# loop.getaddrinfo's shape: (host, port, family=, type=) -> [(family, type, proto, canonname, sockaddr)]
Resolver = Callable[..., Awaitable[list[tuple[Any, ...]]]]

RESOLVE_TIMEOUT_S = 5.0

# Cloud instance metadata services. Most are also link-local or private, and refused as such; the
# list makes sure the ones that are not (e.g. Alibaba's 100.100.100.200, Azure's 168.63.129.16) are.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server
        "192.0.0.192",  # Oracle Cloud
    )
)


class RefusedAddress(ValueError):
    """The URL resolves to an address backends may not have."""


def refusal(ip: IPAddress, allowed: Sequence[IPNetwork]) -> str | None:
    """Why `ip` is refused, or None if a backend may live there."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    if any(ip.version == net.version and ip in net for net in allowed):
        return None
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "a reserved, non-public address"
    return None


async def check_url(
    url: str, allowed: Sequence[IPNetwork], resolver: Resolver | None = None
) -> list[IPAddress]:
    """Resolve the URL's host; raise RefusedAddress unless every address is admitted."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise RefusedAddress("the url has no host")
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = await _resolve(host, parts.port or (443 if parts.scheme == "https" else 80), resolver)
    for ip in addresses:
        reason = refusal(ip, allowed)
        if reason is not None:
            raise RefusedAddress(
                f"the url's host {host} resolves to {ip}, {reason}; backends must be public "
                "unless MCPQ_ALLOWED_BACKEND_NETWORKS admits the address"
            )
    return addresses


async def _resolve(host: str, port: int, resolver: Resolver | None) -> list[IPAddress]:
    getaddrinfo = resolver or asyncio.get_running_loop().getaddrinfo
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        raise RefusedAddress(f"the url's host {host} cannot be resolved ({type(exc).__name__})") from None
    # A scoped IPv6 address comes back as "fe80::1%eth0": drop the zone before parsing.
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos}
    if not addresses:
        raise RefusedAddress(f"the url's host {host} resolves to no address")
    return sorted(addresses, key=lambda a: (a.version, int(a)))
