"""The SSRF guard: NetworkPolicy, GuardedResolver, and the sender enforcing them.

Traffic only ever goes to 127.0.0.1; other addresses are only classified.
"""

from __future__ import annotations

import socket

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

from notifyagent.dispatcher.call import ErrorKind, OutgoingCall
from notifyagent.dispatcher.guard import BlockedAddress, GuardedResolver, NetworkPolicy
from notifyagent.dispatcher.http import HttpSender

DEFAULT = NetworkPolicy()
ALLOW = "allow it with NOTIFY_ALLOW_NETWORKS"
SEEN = web.AppKey("seen", list)


# -- NetworkPolicy.check ----------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("127.255.0.9", "127.255.0.9 is a loopback address"),
        ("::1", "::1 is a loopback address"),
        ("0.0.0.0", "0.0.0.0 is an unspecified address"),
        ("::", ":: is an unspecified address"),
        ("10.0.0.1", "10.0.0.1 is a private address"),
        ("172.16.5.4", "172.16.5.4 is a private address"),
        ("192.168.1.1", "192.168.1.1 is a private address"),
        ("fd12:3456::1", "fd12:3456::1 is a private address"),
        ("169.254.169.254", "169.254.169.254 is a link-local address"),
        ("fe80::1", "fe80::1 is a link-local address"),
        ("fe80::1%eth0", "fe80::1%eth0 is a link-local address"),
        ("224.0.0.1", "224.0.0.1 is a multicast address"),
        ("ff02::1", "ff02::1 is a multicast address"),
        ("100.64.0.1", "100.64.0.1 is a carrier-grade NAT (100.64.0.0/10) address"),
        ("240.0.0.1", "240.0.0.1 is a private address"),  # Python files 240/4 under private
        ("::ffff:127.0.0.1", "::ffff:7f00:1 (IPv4 127.0.0.1) is a loopback address"),
        ("::ffff:10.1.2.3", "::ffff:a01:203 (IPv4 10.1.2.3) is a private address"),
        (
            "::ffff:169.254.169.254",
            "::ffff:a9fe:a9fe (IPv4 169.254.169.254) is a link-local address",
        ),
        ("2002:7f00:1::", "2002:7f00:1:: (IPv4 127.0.0.1) is a loopback address"),
        ("64:ff9b::a00:1", "64:ff9b::a00:1 (IPv4 10.0.0.1) is a private address"),
    ],
)
def test_inner_addresses_are_refused_by_default(address, reason):
    assert DEFAULT.check(address) == f"{reason}; {ALLOW}"


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"],
)
def test_public_addresses_pass(address):
    assert DEFAULT.check(address) is None


@pytest.mark.parametrize(
    ("allow", "address"),
    [
        ("127.0.0.0/8", "127.0.0.1"),
        ("127.0.0.0/8", "::ffff:127.0.0.1"),
        ("10.0.0.0/8, 192.168.0.0/16", "192.168.7.7"),
        ("::1/128", "::1"),
        ("169.254.169.254", "169.254.169.254"),
    ],
)
def test_allowed_networks_open_inner_addresses(allow, address):
    assert NetworkPolicy.from_csv(allow).check(address) is None


def test_an_allowed_network_opens_only_itself():
    policy = NetworkPolicy.from_csv("10.0.0.0/24")
    assert policy.check("10.0.0.9") is None
    assert policy.check("10.0.1.9") is not None
    assert policy.check("127.0.0.1") is not None


def test_ipv4_allowance_does_not_open_ipv6_and_back():
    assert NetworkPolicy.from_csv("::/0").check("127.0.0.1") is not None
    assert NetworkPolicy.from_csv("0.0.0.0/0").check("::1") is not None


def test_csv_tolerates_spaces_and_empty_entries():
    policy = NetworkPolicy.from_csv(" 127.0.0.0/8 ,, ::1/128 ,")
    assert [str(net) for net in policy.allow] == ["127.0.0.0/8", "::1/128"]
    assert NetworkPolicy.from_csv("").allow == ()


@pytest.mark.parametrize("text", ["127.0.0.0/33", "localhost", "10.0.0.0/8,nope", "::1/129"])
def test_bad_cidr_names_the_setting(text):
    with pytest.raises(ValueError, match="NOTIFY_ALLOW_NETWORKS") as info:
        NetworkPolicy.from_csv(text)
    assert "CIDR" in str(info.value)


# -- GuardedResolver --------------------------------------------------------


class FixedResolver(AbstractResolver):
    """Answers every name with fixed addresses, as a rebinding DNS server might."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=addr,
                port=port,
                family=socket.AF_INET6 if ":" in addr else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for addr in self.addresses
        ]

    async def close(self) -> None:
        self.closed = True


async def test_resolver_drops_refused_addresses_and_keeps_public_ones():
    inner = FixedResolver("93.184.216.34", "127.0.0.1", "::ffff:10.0.0.1")
    resolver = GuardedResolver(DEFAULT, inner)
    answers = await resolver.resolve("rebind.example", 443)
    assert [a["host"] for a in answers] == ["93.184.216.34"]


async def test_resolver_raises_blocked_address_when_nothing_is_left():
    resolver = GuardedResolver(DEFAULT, FixedResolver("10.0.0.1", "169.254.169.254"))
    with pytest.raises(BlockedAddress) as info:
        await resolver.resolve("rebind.example", 80)
    assert isinstance(info.value, OSError)
    assert str(info.value) == (
        "rebind.example resolves only to refused addresses: "
        f"10.0.0.1 is a private address; {ALLOW}"
    )


async def test_resolver_passes_allowed_addresses_and_closes_its_inner_resolver():
    inner = FixedResolver("127.0.0.1")
    resolver = GuardedResolver(NetworkPolicy.from_csv("127.0.0.0/8"), inner)
    assert [a["host"] for a in await resolver.resolve("localhost", 80)] == ["127.0.0.1"]
    await resolver.close()
    assert inner.closed


# -- the sender enforces the guard ------------------------------------------


async def record(request: web.Request) -> web.Response:
    request.app[SEEN].append(request.path)
    return web.Response(text="ok")


@pytest.fixture
async def target():
    app = web.Application()
    app[SEEN] = []
    app.router.add_route("*", "/{tail:.*}", record)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    yield server
    await server.close()


def make_call(url: str) -> OutgoingCall:
    return OutgoingCall(
        notify_id="n1",
        attempt=1,
        method="GET",
        url=url,
        headers={},
        body=b"",
        query={},
        timeout=5.0,
        success_codes=(),
        body_contains="",
        fire_and_forget=False,
    )


async def send(policy: NetworkPolicy, url: str):
    async with HttpSender(policy=policy) as sender:
        return await sender.send(make_call(url))


async def test_loopback_ip_literal_is_refused_by_default(target):
    outcome = await send(DEFAULT, f"http://127.0.0.1:{target.port}/hook")
    assert outcome.error_kind is ErrorKind.BLOCKED
    assert outcome.error == f"blocked: 127.0.0.1 is a loopback address; {ALLOW}"
    assert (outcome.status_code, outcome.success, outcome.retryable) == (0, False, False)
    assert target.app[SEEN] == []


async def test_localhost_name_is_refused_by_default_after_resolution(target):
    outcome = await send(DEFAULT, f"http://localhost:{target.port}/hook")
    assert outcome.error_kind is ErrorKind.BLOCKED
    assert outcome.error.startswith("blocked: localhost resolves only to refused addresses: ")
    assert "is a loopback address" in outcome.error and ALLOW in outcome.error
    assert target.app[SEEN] == []


@pytest.mark.parametrize(
    "host",
    [
        "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6 literal
        "2130706433",  # 127.0.0.1 as one number
        "127.1",  # short dotted form
        "0x7f.0.0.1",  # hex: not an IP literal to aiohttp, so it goes to the resolver
    ],
)
async def test_odd_spellings_of_loopback_do_not_get_through(target, host):
    outcome = await send(DEFAULT, f"http://{host}:{target.port}/hook")
    assert not outcome.success
    assert outcome.error_kind is ErrorKind.BLOCKED, outcome.error
    assert target.app[SEEN] == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_loopback_is_reachable_when_allowed(target, host):
    policy = NetworkPolicy.from_csv("127.0.0.0/8,::1/128")
    outcome = await send(policy, f"http://{host}:{target.port}/hook")
    assert outcome.success, outcome.error
    assert target.app[SEEN] == ["/hook"]
