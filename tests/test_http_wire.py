"""HttpSender's own HTTP/1.1 client (dispatcher/wire.py) against real sockets on 127.0.0.1:
keep-alive reuse, a pooled connection the server closed, framing (chunked, until close, 1xx,
HEAD), gzip and deflate with a bomb bounded by the cap, bounded heads, timeouts, cancellation,
DNS answers checked by the guard, https with a throwaway CA, and fuzzed responses and headers."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gzip
import socket
import ssl
import time
import tracemalloc
import zlib

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings, strategies as st

from notifyagent.dispatcher import call as call_module
from notifyagent.dispatcher.call import CallOutcome, ErrorKind, OutgoingCall, capped_headers
from notifyagent.dispatcher.guard import NetworkPolicy
from notifyagent.dispatcher.http import HttpSender
from support import Pki

LOOPBACK = NetworkPolicy.from_csv("127.0.0.0/8,::1/128")


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def make_call(url: str, **changes: object) -> OutgoingCall:
    call = OutgoingCall(
        notify_id="01J0NOTIFYID", attempt=1, method="GET", url=url, headers={}, body=b"", query={},
        timeout=5.0, success_codes=(), body_contains="", fire_and_forget=False,
    )  # fmt: skip
    return dataclasses.replace(call, **changes)


class RawServer:
    """A hand-written HTTP/1.1 server: `answer(conn, n, head)` gives the bytes for the n-th request
    on connection `conn`: bytes to write, a coroutine function taking the writer, or None to close."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.connections = 0
        self.closed = 0
        self.requests: list[tuple[int, bytes, bytes]] = []  # (connection, head, body) answered
        self.dropped = 0  # requests read and then closed on without an answer
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self.connections
        self.connections += 1
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                action = self.answer(conn, n, head)
                n += 1
                if action is None:
                    self.dropped += 1
                    break
                self.requests.append((conn, head, body))
                if isinstance(action, bytes):
                    writer.write(action)
                    await writer.drain()
                elif await action(writer) is False:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            self.closed += 1


# -- keep-alive ---------------------------------------------------------------


async def test_keep_alive_sends_many_calls_over_one_connection():
    async with RawServer(lambda c, n, h: OK) as server, HttpSender(policy=LOOPBACK) as sender:
        for i in range(20):
            outcome = await sender.send(make_call(server.url(), method="POST", body=b"x" * i))
            assert (outcome.status_code, outcome.snippet) == (200, b"ok"), outcome.error
        assert server.connections == 1
        assert [body for _, _, body in server.requests] == [b"x" * i for i in range(20)]


async def test_concurrent_calls_open_connections_and_limit_per_host_bounds_them():
    async def slow_ok(writer):
        await asyncio.sleep(0.05)
        writer.write(OK)

    async with RawServer(lambda c, n, h: slow_ok) as server, HttpSender(policy=LOOPBACK, limit_per_host=3) as sender:
        outcomes = await asyncio.gather(*(sender.send(make_call(server.url())) for _ in range(12)))
        assert all(o.success for o in outcomes)
        assert server.connections == 3


async def test_a_pooled_connection_the_server_closed_while_idle_is_not_used():
    async def ok_then_close(writer):
        writer.write(OK)
        await writer.drain()
        return False  # closes the connection after the answer, without saying so

    async with RawServer(lambda c, n, h: ok_then_close) as server, HttpSender(policy=LOOPBACK) as sender:
        assert (await sender.send(make_call(server.url()))).success
        await asyncio.sleep(0.1)
        outcome = await sender.send(make_call(server.url()))
        assert outcome.success, outcome.error
        assert (server.connections, len(server.requests), server.dropped) == (2, 2, 0)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_an_idempotent_request_the_server_closed_on_unanswered_is_sent_again_once_on_a_new_connection(method):
    # The race of a server closing an idle connection just as the next request goes out.
    async with RawServer(lambda c, n, h: OK if n == 0 else None) as server, HttpSender(policy=LOOPBACK) as sender:
        assert (await sender.send(make_call(server.url()))).success
        outcome = await sender.send(make_call(server.url(), method=method, body=b"once"))
        assert outcome.success, outcome.error
        assert (server.connections, server.dropped) == (2, 1)
        assert [(c, body) for c, _, body in server.requests] == [(0, b""), (1, b"once")]


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_post_the_server_read_and_closed_on_is_never_sent_again(method):
    # The server may have acted on what it read: a duplicate only ever comes from a dispatcher cut off (DESIGN.md).
    async with RawServer(lambda c, n, h: OK if n == 0 else None) as server, HttpSender(policy=LOOPBACK) as sender:
        assert (await sender.send(make_call(server.url()))).success
        outcome = await sender.send(make_call(server.url(), method=method, body=b"once"))
        assert outcome.error_kind is ErrorKind.PROTOCOL, outcome
        assert outcome.error == "ServerDisconnected: the server closed the connection"
        assert (server.connections, server.dropped) == (1, 1)


async def test_a_call_on_a_new_connection_is_never_sent_twice():
    async with RawServer(lambda c, n, h: None) as server, HttpSender(policy=LOOPBACK) as sender:
        outcome = await sender.send(make_call(server.url()))
        assert outcome.error_kind is ErrorKind.PROTOCOL
        assert outcome.error == "ServerDisconnected: the server closed the connection"
        assert (server.connections, server.dropped) == (1, 1)


async def test_no_resend_after_a_response_byte_came_on_a_reused_connection():
    async with RawServer(lambda c, n, h: OK if n == 0 else b"HTTP/1.1 20") as server:
        async with HttpSender(policy=LOOPBACK) as sender:
            assert (await sender.send(make_call(server.url()))).success
            server.answer = lambda c, n, h: OK if n == 0 else (lambda w: _write_and_close(w, b"HTTP/1.1 20"))
            outcome = await sender.send(make_call(server.url()))
        assert outcome.error_kind is ErrorKind.PROTOCOL
        assert (server.connections, len(server.requests)) == (1, 2)


async def _write_and_close(writer, data: bytes):
    writer.write(data)
    await writer.drain()
    return False


async def test_connection_close_and_http_1_0_answers_are_not_reused():
    answers = [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", OK, OK]
    async with RawServer(lambda c, n, h: answers[c]) as server, HttpSender(policy=LOOPBACK) as sender:
        for _ in range(4):
            assert (await sender.send(make_call(server.url()))).success
        assert server.connections == 3


async def test_idle_connections_are_closed_after_the_keepalive_time_and_on_close():
    async with RawServer(lambda c, n, h: OK) as server:
        sender = HttpSender(policy=LOOPBACK, keepalive=0.2)
        await sender.start()
        await sender.send(make_call(server.url()))
        assert sender.pool.idle_count() == 1
        for _ in range(50):
            if server.closed:
                break
            await asyncio.sleep(0.05)
        assert (server.closed, sender.pool.idle_count()) == (1, 0)
        await sender.send(make_call(server.url()))
        await sender.close()
        await asyncio.sleep(0.05)
        assert (server.connections, server.closed) == (2, 2)


# -- framing ------------------------------------------------------------------


async def test_chunked_answer_with_extensions_and_trailers_is_read_and_the_connection_kept():
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n")  # fmt: skip
    async with RawServer(lambda c, n, h: chunked) as server, HttpSender(policy=LOOPBACK) as sender:
        for _ in range(3):
            outcome = await sender.send(make_call(server.url(), body_contains="world"))
            assert (outcome.success, outcome.snippet) == (True, b"hello, world"), outcome.error
        assert server.connections == 1


async def test_chunked_answer_with_a_bad_size_is_a_protocol_error_for_a_body_match():
    bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    async with RawServer(lambda c, n, h: bad) as server, HttpSender(policy=LOOPBACK) as sender:
        outcome = await sender.send(make_call(server.url(), body_contains="hello"))
        assert (outcome.status_code, outcome.error_kind) == (200, ErrorKind.PROTOCOL)
        assert outcome.error.startswith("HTTP 200, then reading the body: ProtocolError: bad chunk size")
        assert (await sender.send(make_call(server.url()))).status_code == 200
        assert server.connections == 2  # the broken one was not pooled


async def test_answer_without_length_is_read_until_close():
    async def until_close(writer):
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nall of ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"it")
        return False

    async with RawServer(lambda c, n, h: until_close) as server, HttpSender(policy=LOOPBACK) as sender:
        for _ in range(2):
            outcome = await sender.send(make_call(server.url(), body_contains="it"))
            assert (outcome.success, outcome.snippet) == (True, b"all of it"), outcome.error
        assert server.connections == 2


async def test_a_body_cut_short_fails_only_a_call_that_needs_it():
    short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    async with RawServer(lambda c, n, h: (lambda w: _write_and_close(w, short))) as server, HttpSender(policy=LOOPBACK) as sender:
        judged_on_status = await sender.send(make_call(server.url()))
        assert (judged_on_status.success, judged_on_status.snippet) == (True, b"abc")
        needs_body = await sender.send(make_call(server.url(), body_contains="abcd"))
        assert (needs_body.success, needs_body.error_kind) == (False, ErrorKind.PROTOCOL)
        assert needs_body.error == "HTTP 200, then reading the body: ServerDisconnected: the server closed the connection"


async def test_interim_1xx_answers_are_skipped():
    interim = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
               b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\nX-Final: yes\r\n\r\ndone")  # fmt: skip
    async with RawServer(lambda c, n, h: interim) as server, HttpSender(policy=LOOPBACK) as sender:
        outcome = await sender.send(make_call(server.url()))
        assert (outcome.status_code, outcome.snippet, outcome.headers) == (201, b"done", {"Content-Length": "4", "X-Final": "yes"})
        assert (await sender.send(make_call(server.url()))).status_code == 201
        assert server.connections == 1


async def test_head_204_and_304_answers_have_no_body_and_keep_the_connection():
    answers = {
        "HEAD": b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
        "GET": b"HTTP/1.1 204 No Content\r\n\r\n",
        "PUT": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n",
    }  # fmt: skip
    async with RawServer(lambda c, n, h: answers[h.split(b" ")[0].decode()]) as server, HttpSender(policy=LOOPBACK) as sender:
        for method, status in (("HEAD", 200), ("GET", 204), ("PUT", 304), ("HEAD", 200)):
            outcome = await sender.send(make_call(server.url(), method=method))
            assert (outcome.status_code, outcome.snippet) == (status, b"")
        assert server.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
    ],
)
async def test_broken_answers_are_protocol_errors(answer):
    async with RawServer(lambda c, n, h: answer) as server, HttpSender(policy=LOOPBACK) as sender:
        outcome = await sender.send(make_call(server.url()))
        assert (outcome.status_code, outcome.error_kind, outcome.retryable) == (0, ErrorKind.PROTOCOL, True)
        assert outcome.error.startswith("ProtocolError: ")


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",  # one huge field
        b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 300 + b"\r\n",  # too many fields
        b"HTTP/1.1 200 OK\r\n" + b"X-Endless: 1\r\n" * 20000,  # a head that never ends
    ],
)
async def test_oversized_heads_are_protocol_errors_not_unbounded_memory(answer):
    async with RawServer(lambda c, n, h: answer) as server, HttpSender(policy=LOOPBACK) as sender:
        tracemalloc.start()
        try:
            outcome = await sender.send(make_call(server.url()))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert outcome.error_kind is ErrorKind.PROTOCOL
        assert "ProtocolError: " in outcome.error and ("over 65536 bytes" in outcome.error or "over 256 header fields" in outcome.error)
        assert peak < 2_000_000


# -- content encodings ---------------------------------------------------------


def _deflate(data: bytes, wbits: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [("gzip", gzip.compress), ("x-gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", lambda d: _deflate(d, -15))],
)
async def test_compressed_answers_are_decoded(encoding, pack):
    text = b"the answer is " + b"forty-two " * 100 + b"needle"
    body = pack(text)
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n%s" % (encoding.encode(), len(body), body)
    async with RawServer(lambda c, n, h: answer) as server, HttpSender(policy=LOOPBACK) as sender:
        outcome = await sender.send(make_call(server.url(), body_contains="needle"))
        assert outcome.success, outcome.error
        assert outcome.snippet == text[:4096]
        assert b"Accept-Encoding: gzip, deflate\r\n" in server.requests[0][1]


async def test_a_decompression_bomb_allocates_no_more_than_the_cap():
    bomb = gzip.compress(b"\0" * (200 * 1024 * 1024), compresslevel=9)  # 200 MiB of zeros in ~200 KiB
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(bomb), bomb)
    async with RawServer(lambda c, n, h: answer) as server, HttpSender(policy=LOOPBACK) as sender:
        tracemalloc.start()
        try:
            outcome = await sender.send(make_call(server.url(), body_contains="needle"))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert outcome.status_code == 200
        assert outcome.snippet == b"\0" * 4096
        assert outcome.error.endswith("(searched the first 65536 bytes)")
        assert peak < 4_000_000


async def test_a_corrupt_gzip_body_fails_a_body_match_as_a_protocol_error():
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 12\r\n\r\nnot gzip :-("
    async with RawServer(lambda c, n, h: answer) as server, HttpSender(policy=LOOPBACK) as sender:
        outcome = await sender.send(make_call(server.url(), body_contains="x"))
        assert (outcome.status_code, outcome.error_kind) == (200, ErrorKind.PROTOCOL)
        assert "cannot decode content-encoding gzip" in outcome.error


# -- time and cancellation -------------------------------------------------------


async def test_a_head_trickled_byte_by_byte_times_out_on_the_attempts_deadline():
    async def trickle(writer):
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"s" * 1000:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.01)

    async with RawServer(lambda c, n, h: trickle) as server, HttpSender(policy=LOOPBACK) as sender:
        started = time.monotonic()
        outcome = await sender.send(make_call(server.url(), timeout=0.3))
        assert (outcome.error_kind, outcome.error) == (ErrorKind.TIMEOUT, "timed out after 0.3 s")
        assert time.monotonic() - started < 2.0  # bounded by the deadline, not by the trickle (10 s)


async def test_connect_timeout_counts_against_the_attempt():
    # A listening socket whose backlog is full: connects hang in SYN_SENT on most kernels, or are refused.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                fillers.append(s)
            async with HttpSender(policy=LOOPBACK) as sender:
                outcome = await sender.send(make_call(f"http://127.0.0.1:{port}/", timeout=0.3))
        finally:
            for s in fillers:
                s.close()
    assert outcome.error_kind in (ErrorKind.TIMEOUT, ErrorKind.CONNECT)
    assert outcome.latency < 2.0


async def test_cancellation_mid_body_closes_the_connection_instead_of_pooling_it():
    async def stall(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        await asyncio.sleep(30)

    async with RawServer(lambda c, n, h: stall if c == 0 else OK) as server, HttpSender(policy=LOOPBACK) as sender:
        task = asyncio.create_task(sender.send(make_call(server.url(), timeout=30)))
        for _ in range(100):
            if server.requests:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sender.pool.idle_count() == 0
        outcome = await sender.send(make_call(server.url()))
        assert outcome.success, outcome.error
        assert server.connections == 2


# -- the SSRF guard on resolved names ---------------------------------------------


class FixedResolver(AbstractResolver):
    """Answers every name with fixed addresses, as a rebinding DNS server might."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.asked.append(host)
        return [ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET, proto=0, flags=0) for a in self.addresses]

    async def close(self) -> None:
        pass


async def test_a_name_resolving_only_to_refused_addresses_is_blocked():
    async with RawServer(lambda c, n, h: OK) as server:
        resolver = FixedResolver("10.0.0.1", "127.0.0.1")
        async with HttpSender(policy=NetworkPolicy(), resolver=resolver) as sender:
            outcome = await sender.send(make_call(f"http://rebind.invalid:{server.port}/"))
        assert outcome.error_kind is ErrorKind.BLOCKED
        assert outcome.error.startswith("blocked: rebind.invalid resolves only to refused addresses: 10.0.0.1 is a private address")
        assert server.connections == 0


async def test_the_connection_goes_to_the_checked_address_not_to_the_name_again():
    # rebind.invalid resolves nowhere in real DNS: only a connection to the checked answer can reach the target.
    async with RawServer(lambda c, n, h: OK) as server:
        resolver = FixedResolver("10.0.0.1", "127.0.0.1")
        async with HttpSender(policy=NetworkPolicy.from_csv("127.0.0.0/8"), resolver=resolver) as sender:
            for _ in range(2):
                outcome = await sender.send(make_call(f"http://rebind.invalid:{server.port}/"))
                assert outcome.success, outcome.error
        assert b"\r\nHost: rebind.invalid:%d\r\n" % server.port in server.requests[0][1]
        assert (resolver.asked, server.connections) == (["rebind.invalid"], 1)


# -- https ----------------------------------------------------------------------------


@pytest.fixture
async def tls_target(tmp_path):
    pki = Pki.make(tmp_path)
    server = await start_tls_server(pki)
    yield server, pki
    await server.close()


async def start_tls_server(pki: Pki) -> TestServer:
    """An HTTPS target on 127.0.0.1 with pki's certificate, answering every GET with the host it was asked for."""
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"tls ok, host {request.host}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(pki.cert), str(pki.key))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server(ssl=context)
    return server


async def test_https_is_refused_without_trust_in_the_targets_ca(tls_target, monkeypatch):
    server, pki = tls_target
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.other_ca))
    async with HttpSender(policy=LOOPBACK) as sender:
        outcome = await sender.send(make_call(f"https://127.0.0.1:{server.port}/x"))
    assert outcome.error_kind is ErrorKind.CONNECT
    assert outcome.error.startswith(f"connect failed: 127.0.0.1:{server.port}: ")
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.error


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_https_verifies_the_name_against_a_trusted_ca_and_keeps_the_connection(tls_target, monkeypatch, host):
    server, pki = tls_target
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    async with HttpSender(policy=LOOPBACK) as sender:
        for _ in range(3):
            outcome = await sender.send(make_call(f"https://{host}:{server.port}/x", body_contains="tls ok"))
            assert outcome.success, outcome.error
            assert outcome.snippet == f"tls ok, host {host}:{server.port}".encode()
        assert sender.pool.idle_count() == 1


async def test_https_refuses_a_certificate_for_another_name(tls_target, monkeypatch):
    server, pki = tls_target
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    resolver = FixedResolver("127.0.0.1")  # the certificate names 127.0.0.1 and localhost, not this
    async with HttpSender(policy=LOOPBACK, resolver=resolver) as sender:
        outcome = await sender.send(make_call(f"https://elsewhere.invalid:{server.port}/x"))
    assert outcome.error_kind is ErrorKind.CONNECT
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.error and "elsewhere.invalid" in outcome.error


# -- requests as sent -------------------------------------------------------------------


async def test_the_request_is_framed_as_before():
    async with RawServer(lambda c, n, h: OK) as server, HttpSender(policy=LOOPBACK) as sender:
        await sender.send(make_call(server.url("/p a/th?x=1#frag"), method="DELETE", query={"y": "ü &"}))
        await sender.send(make_call(server.url(), headers={"Host": "virtual.example", "Accept": "text/plain"}))
        first, second = (head.decode() for _, head, _ in server.requests)
    assert first.startswith("DELETE /p%20a/th?x=1&y=%C3%BC+%26 HTTP/1.1\r\n")
    assert f"\r\nHost: 127.0.0.1:{server.port}\r\n" in first and "\r\nContent-Length: 0\r\n" in first
    assert "\r\nAccept: */*\r\n" in first and "frag" not in first
    assert "\r\nHost: virtual.example\r\n" in second and "\r\nAccept: text/plain\r\n" in second
    assert "Content-Length" not in second and second.count("Host:") == 1 and "*/*" not in second


@pytest.mark.parametrize(
    "headers",
    [{"X-Evil": "a\r\nInjected: yes"}, {"X-Evil": "a\nb"}, {"Bad Name": "x"}, {"X:y": "z"}, {"X-Nul": "a\x00b"}, {"": "x"}],
)
async def test_headers_that_would_break_the_request_are_refused_before_sending(headers):
    async with RawServer(lambda c, n, h: OK) as server, HttpSender(policy=LOOPBACK) as sender:
        outcome = await sender.send(make_call(server.url(), headers=headers))
        assert (outcome.error_kind, outcome.retryable) == (ErrorKind.BLOCKED, False)
        assert outcome.error.startswith("invalid request: invalid ")
        assert server.connections == 0


# -- fuzz ---------------------------------------------------------------------------------


def _run_against(answer: bytes, close: bool, call_changes: dict, uvloop: bool = False) -> tuple[CallOutcome, RawServer, int]:
    async def scenario():
        async def respond(writer):
            writer.write(answer)
            await writer.drain()
            if not close:
                await asyncio.sleep(1)
            return False

        async with RawServer(lambda c, n, h: respond) as server, HttpSender(policy=LOOPBACK) as sender:
            tracemalloc.start()
            try:
                outcome = await sender.send(make_call(server.url(), timeout=0.2, **call_changes))
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            return outcome, server, peak

    if uvloop:
        return pytest.importorskip("uvloop").run(scenario())
    return asyncio.run(scenario())


_heads = st.builds(
    lambda status, fields, body: b"HTTP/1.1 %d X\r\n" % status + b"".join(b"%s: %s\r\n" % f for f in fields) + b"\r\n" + body,
    st.integers(100, 599),
    st.lists(st.tuples(st.sampled_from([b"Content-Length", b"Transfer-Encoding", b"Content-Encoding", b"Connection", b"Retry-After", b"X-A"]),
                       st.sampled_from([b"0", b"5", b"-1", b"chunked", b"gzip", b"deflate", b"close", b"", b"\xff\xfe", b"1, 2", b"99999999999999999999"])),
             max_size=6),
    st.binary(max_size=300) | st.sampled_from([b"5\r\nhello\r\n0\r\n\r\n", b"ffffffffffffffffff\r\n", b"0\r\n" + b"T: x\r\n" * 50]),
)  # fmt: skip


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(answer=st.binary(max_size=2000) | _heads, close=st.booleans(), needle=st.sampled_from(["", "hello", "\x00"]), uvloop=st.booleans())
def test_any_bytes_as_an_answer_give_an_outcome_with_bounded_memory(answer, close, needle, uvloop):
    outcome, _, peak = _run_against(answer, close, {"body_contains": needle}, uvloop)
    assert isinstance(outcome, CallOutcome)
    assert len(outcome.snippet) <= 4096
    assert outcome.error_kind in (ErrorKind.NONE, ErrorKind.PROTOCOL, ErrorKind.TIMEOUT)
    assert (outcome.status_code != 0) == (outcome.error_kind is ErrorKind.NONE or outcome.error.startswith("HTTP "))
    assert peak < 2_000_000


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(headers=st.dictionaries(st.text(max_size=12), st.text(max_size=20), max_size=4))
def test_any_caller_headers_are_sent_exactly_or_refused(headers):
    outcome, server, _ = _run_against(OK, True, {"headers": headers})
    if outcome.error_kind is ErrorKind.BLOCKED:
        assert outcome.error.startswith("invalid request: ") and server.connections == 0
        return
    assert outcome.success, outcome.error
    (_, head, _), = server.requests
    lines = head.decode().split("\r\n")[1:-2]
    sent = [tuple(line.split(": ", 1)) for line in lines]
    for name, value in headers.items():
        if name.lower() in ("content-length", "transfer-encoding", "notify-id", "notify-attempt", "idempotency-key"):
            continue
        assert (name, value.strip(" \t")) in [(n, v.strip(" \t")) for n, v in sent] or any(
            n.lower() == name.lower() for n, _ in sent
        )


async def test_concurrent_new_connections_to_a_name_share_one_checked_lookup():
    async def slow_ok(writer):
        await asyncio.sleep(0.05)
        writer.write(OK)

    async with RawServer(lambda c, n, h: slow_ok) as server:
        resolver = FixedResolver("127.0.0.1")
        async with HttpSender(policy=LOOPBACK, resolver=resolver) as sender:
            outcomes = await asyncio.gather(*(sender.send(make_call(f"http://name.invalid:{server.port}/")) for _ in range(5)))
        assert all(o.success for o in outcomes)
        assert (resolver.asked, server.connections) == (["name.invalid"], 5)


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.tuples(st.sampled_from(["X-A", "x-a", "Date", "É", "S\x00"]) | st.text(max_size=300),
                          st.text(max_size=300) | st.sampled_from(["v", "a\r\nb", ""])), max_size=40))  # fmt: skip
def test_capped_headers_fast_path_keeps_exactly_what_the_full_rules_keep(pairs):
    assert capped_headers(pairs) == call_module._capped(pairs)


# -- the same on uvloop (what dispatchers run on where it is installed) ----------------------

ON_UVLOOP = [
    test_keep_alive_sends_many_calls_over_one_connection,
    test_concurrent_calls_open_connections_and_limit_per_host_bounds_them,
    test_a_pooled_connection_the_server_closed_while_idle_is_not_used,
    functools.partial(test_an_idempotent_request_the_server_closed_on_unanswered_is_sent_again_once_on_a_new_connection, "GET"),
    functools.partial(test_a_post_the_server_read_and_closed_on_is_never_sent_again, "POST"),
    test_no_resend_after_a_response_byte_came_on_a_reused_connection,
    test_chunked_answer_with_extensions_and_trailers_is_read_and_the_connection_kept,
    test_answer_without_length_is_read_until_close,
    test_interim_1xx_answers_are_skipped,
    test_head_204_and_304_answers_have_no_body_and_keep_the_connection,
    test_a_decompression_bomb_allocates_no_more_than_the_cap,
    test_a_head_trickled_byte_by_byte_times_out_on_the_attempts_deadline,
    test_cancellation_mid_body_closes_the_connection_instead_of_pooling_it,
    test_the_connection_goes_to_the_checked_address_not_to_the_name_again,
]


@pytest.mark.parametrize("case", ON_UVLOOP, ids=lambda case: getattr(case, "func", case).__name__.removeprefix("test_"))
def test_on_uvloop(case):
    pytest.importorskip("uvloop").run(case())


def test_https_on_uvloop(tmp_path, monkeypatch):
    uvloop = pytest.importorskip("uvloop")
    pki = Pki.make(tmp_path)

    async def scenario():
        server = await start_tls_server(pki)
        port = server.port
        try:
            monkeypatch.setenv("SSL_CERT_FILE", str(pki.other_ca))
            async with HttpSender(policy=LOOPBACK) as sender:
                refused = await sender.send(make_call(f"https://localhost:{server.port}/"))
            monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
            async with HttpSender(policy=LOOPBACK) as sender:
                answers = [await sender.send(make_call(f"https://localhost:{server.port}/")) for _ in range(3)]
                idle = sender.pool.idle_count()
        finally:
            await server.close()
        return refused, answers, idle, port

    refused, answers, idle, port = uvloop.run(scenario())
    assert refused.error_kind is ErrorKind.CONNECT and "CERTIFICATE_VERIFY_FAILED" in refused.error
    assert [(a.status_code, a.snippet) for a in answers] == [(200, f"tls ok, host localhost:{port}".encode())] * 3
    assert idle == 1


# -- found by review: hostile answers, shared lookups, several addresses, userinfo, close ---------------


async def test_a_body_of_tiny_chunks_with_a_body_match_lets_the_loop_run_and_is_read_whole():
    body = b"1\r\na\r\n" * 30000 + b"3\r\nend\r\n0\r\n\r\n"
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    async with RawServer(lambda c, n, h: answer) as server, HttpSender(policy=LOOPBACK) as sender:
        task = asyncio.create_task(ticker())
        try:
            found = await sender.send(make_call(server.url(), body_contains="aend"))
            absent = await sender.send(make_call(server.url(), body_contains="zz"))
        finally:
            task.cancel()
    assert found.success, found.error
    assert not absent.success and "does not contain 'zz'" in absent.error
    # Every 64 chunks the read yields: other deliveries (the ticker here) go on meanwhile.
    assert ticks >= 2 * 30000 // 64 - 10


class SlowResolver(FixedResolver):
    def __init__(self, delay: float, *addresses: str) -> None:
        super().__init__(*addresses)
        self.delay = delay

    async def resolve(self, host, port=0, family=socket.AF_INET):
        await asyncio.sleep(self.delay)
        return await super().resolve(host, port, family)


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_a_call_giving_up_on_a_shared_lookup_does_not_end_the_others(how):
    async with RawServer(lambda c, n, h: OK) as server:
        resolver = SlowResolver(0.3, "127.0.0.1")
        async with HttpSender(policy=LOOPBACK, resolver=resolver) as sender:
            url = f"http://shared.invalid:{server.port}/"
            first = asyncio.create_task(sender.send(make_call(url, timeout=0.1 if how == "timeout" else 5)))
            await asyncio.sleep(0.02)
            second = asyncio.create_task(sender.send(make_call(url, timeout=5)))
            if how == "cancel":
                await asyncio.sleep(0.02)
                first.cancel()
            outcome = await second  # neither cancelled nor failed by the first caller's end
            assert outcome.success, outcome.error
            if how == "timeout":
                assert (await first).error_kind is ErrorKind.TIMEOUT
            else:
                with pytest.raises(asyncio.CancelledError):
                    await first
        assert resolver.asked == ["shared.invalid"]


async def test_a_silent_first_address_does_not_use_up_the_deadline():
    # A listener on 127.0.0.2 that never accepts, its backlog full: connection attempts to it get no answer.
    async with RawServer(lambda c, n, h: OK) as server:
        silent = socket.socket()
        silent.bind(("127.0.0.2", server.port))
        silent.listen(0)
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.2", server.port))
            except BlockingIOError:
                pass
            fillers.append(filler)
        try:
            await asyncio.sleep(0.1)
            resolver = FixedResolver("127.0.0.2", "127.0.0.1")
            async with HttpSender(policy=LOOPBACK, resolver=resolver) as sender:
                outcome = await sender.send(make_call(f"http://two.invalid:{server.port}/", timeout=3))
            assert outcome.success, outcome.error
            assert server.connections == 1
        finally:
            for sock in (silent, *fillers):
                sock.close()


async def test_credentials_in_the_url_are_sent_as_basic_authorization_unless_the_caller_set_one():
    async with RawServer(lambda c, n, h: OK) as server, HttpSender(policy=LOOPBACK) as sender:
        url = f"http://us%20er:p%3Ass@127.0.0.1:{server.port}/hook"
        assert (await sender.send(make_call(url))).success
        assert (await sender.send(make_call(url, headers={"authorization": "Bearer mine"}))).success
    first, second = (head.decode() for _, head, _ in server.requests)
    assert "\r\nAuthorization: Basic dXMgZXI6cDpzcw==\r\n" in first  # base64 of "us er:p:ss"
    assert "us%20er" not in first.split("\r\n", 1)[0] and f"Host: 127.0.0.1:{server.port}" in first
    assert "\r\nauthorization: Bearer mine\r\n" in second and "Basic" not in second


async def test_https_to_a_name_with_a_trailing_dot_verifies_the_name_without_it(tls_target, monkeypatch):
    server, pki = tls_target
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    async with HttpSender(policy=LOOPBACK, resolver=FixedResolver("127.0.0.1")) as sender:
        outcome = await sender.send(make_call(f"https://localhost.:{server.port}/x", body_contains="tls ok"))
    assert outcome.success, outcome.error


async def test_close_ends_calls_in_flight_and_calls_waiting_for_a_slot():
    async def never(writer):
        await asyncio.sleep(30)

    async with RawServer(lambda c, n, h: never) as server:
        sender = HttpSender(policy=LOOPBACK, limit=1)
        await sender.start()
        busy = asyncio.create_task(sender.send(make_call(server.url(), timeout=20)))
        while not server.requests and server.connections == 0:
            await asyncio.sleep(0.01)
        waiting = asyncio.create_task(sender.send(make_call(server.url(), timeout=20)))
        await asyncio.sleep(0.05)
        await sender.close()
        outcome = await asyncio.wait_for(busy, 5)
        assert outcome.error_kind is ErrorKind.PROTOCOL and "ServerDisconnected" in outcome.error
        with pytest.raises(RuntimeError, match="the pool is closed"):
            await asyncio.wait_for(waiting, 5)
        assert server.connections == 1  # the waiting call did not connect after close()

