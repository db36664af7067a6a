"""SSRF guard: which addresses deliveries may connect to.

`NetworkPolicy` refuses every address that is not plainly public (loopback,
private, link-local, CGNAT, multicast, reserved, unspecified, and IPv6 forms
that embed one of those) unless an allowed network (NOTIFY_ALLOW_NETWORKS)
contains it. `GuardedResolver` applies the policy to DNS answers, after
resolution, so a name that resolves to an inner address (DNS rebinding
included) never gets a connection: the sender connects to a checked answer,
never to the name again. IP-literal hosts are not resolved: the sender checks
those itself with `NetworkPolicy.check`.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_SETTING = "NOTIFY_ALLOW_NETWORKS"

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class BlockedAddress(OSError):
    """A host resolved only to addresses the network policy refuses."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _kind(ip: IPAddress) -> str | None:
    """What makes an address non-public, or None for a public address."""
    if ip.is_unspecified:
        return "an unspecified"
    if ip.is_loopback:
        return "a loopback"
    if ip.is_link_local:
        return "a link-local"
    if ip.is_multicast:
        return "a multicast"
    if ip in _CGNAT:
        return "a carrier-grade NAT (100.64.0.0/10)"
    if ip.is_private:
        return "a private"
    if ip.is_reserved:
        return "a reserved"
    if not ip.is_global:
        return "a non-public"
    return None


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    allow: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_csv(cls, text: str) -> NetworkPolicy:
        """Parse comma-separated CIDRs such as ``"127.0.0.0/8,::1/128"``."""
        networks = []
        for entry in (part.strip() for part in text.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError as exc:
                raise ValueError(
                    f"{ALLOW_SETTING}: {entry!r} is not a network in CIDR form "
                    f"(e.g. 10.0.0.0/8 or fd00::/8): {exc}"
                ) from exc
        return cls(allow=tuple(networks))

    def allows(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self.allow)

    def check(self, ip: IPAddress | str) -> str | None:
        """None if deliveries may connect to `ip`, else the reason they may not."""
        if isinstance(ip, str):
            ip = ipaddress.ip_address(ip)
        inner = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
        if self.allows(ip) or (inner is not None and self.allows(inner)):
            return None
        kind = _kind(inner) if inner is not None else _kind(ip)
        if kind is None:
            return None
        described = f"{ip} (IPv4 {inner})" if inner is not None else str(ip)
        return f"{described} is {kind} address; allow it with {ALLOW_SETTING}"


class GuardedResolver(AbstractResolver):
    """Resolves with an inner resolver, then drops addresses the policy refuses."""

    def __init__(self, policy: NetworkPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        kept: list[ResolveResult] = []
        refusals: list[str] = []
        for answer in answers:
            reason = self._policy.check(answer["host"])
            if reason is None:
                kept.append(answer)
            else:
                refusals.append(reason)
        if refusals:
            log.debug("dropped refused addresses for %s: %s", host, refusals)
        if refusals and not kept:
            raise BlockedAddress(f"{host} resolves only to refused addresses: {refusals[0]}")
        return kept

    async def close(self) -> None:
        await self._inner.close()
