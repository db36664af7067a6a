"""A lean HTTP/1.1 client on asyncio for deliveries: keep-alive pool, bounded parser.

`Pool.exchange` sends one request on a pooled connection (or a new one) and
returns a `Response` once the status line and headers are in; the body is
read with `Response.read_prefix` up to a cap, and `Response.release` hands the
connection back only when the whole answer was read and the server keeps the
connection alive. Everything is bounded: the response head (64 KiB, 256
fields), chunk lines, trailers, decompressed bytes (the cap) and what is
buffered from the socket. One deadline (the loop's clock) covers connecting,
sending and reading.

Connections go only to addresses the SSRF guard passed: an IP-literal host
is checked by the caller, a name is resolved by `GuardedResolver` and the
connection is made to a checked answer, never to the name again. An
idempotent request that fails before any response byte on a reused connection
(the server closed it while idle) is sent once more on a new connection; never
after a byte came, never a POST or PATCH.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import re
import socket
import ssl
import zlib
from dataclasses import dataclass

import aiohappyeyeballs

from .guard import GuardedResolver

MAX_HEAD = 65536  # status line and header fields, like aiohttp's limits
MAX_FIELDS = 256
MAX_LINE = 8192  # a chunk-size line
DNS_TTL = 10.0  # seconds a checked DNS answer is used for new connections (aiohttp's default)
HAPPY_EYEBALLS_DELAY = 0.25  # seconds before the next address is tried beside a silent one (aiohttp's, RFC 8305)
# Sent again on a new connection when a reused one failed before any answer byte: only these, as aiohttp did,
# since the server may have acted on a request it read before closing.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_READ_HIGH = 262144  # stop reading from the socket with this much unread
_NO_BODY_STATUS = frozenset({204, 304})
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?:[ \t][^\r\n]*)?\r?")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\r\n\x00]")

# Body framing modes
_EMPTY, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(4)


class ProtocolError(Exception):
    """The server broke HTTP/1.1 or the connection mid-exchange."""


class ServerDisconnected(ProtocolError):
    """The connection ended before the answer was complete."""


class ConnectFailed(Exception):
    """No connection: DNS, the SSRF guard (os_error is a BlockedAddress), refused, TLS."""

    def __init__(self, host: str, port: int, os_error: OSError) -> None:
        super().__init__(host, port, os_error)
        self.host, self.port, self.os_error = host, port, os_error


@dataclass(frozen=True, slots=True)
class Origin:
    tls: bool
    host: str  # as connected to: the IDNA form of a name, or an IP literal
    port: int
    literal: bool  # host is an IP address (checked by the caller), not a name to resolve


def check_header(name: str, value: str) -> None:
    """ValueError for a field that would break the request (header injection)."""
    if _TOKEN.fullmatch(name) is None:
        raise ValueError(f"invalid header name {name!r}")
    if _BAD_VALUE.search(value) is not None:
        raise ValueError(f"invalid character in the value of header {name!r}")


def check_method(method: str) -> None:
    if _TOKEN.fullmatch(method) is None:
        raise ValueError(f"invalid method {method!r}")


class _Conn(asyncio.Protocol):
    """One connection: a read buffer, a waiter for more input, an exchange deadline."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Origin) -> None:
        self.loop = loop
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.eof = False
        self.lost: BaseException | None = None  # what ended the connection, if an error did
        self.timed_out = False
        self.got_bytes = False  # a response byte arrived during this exchange
        self.write_paused = False
        self.read_paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.expires = 0.0  # loop time when idle in the pool

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.got_bytes = True
        if len(self.buf) > _READ_HIGH and not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.lost = exc
        self._wake()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake()

    # -- waiting ------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _on_deadline(self) -> None:
        self.timer = None
        self.timed_out = True
        self._wake()

    def start(self, deadline: float) -> None:
        """Begin an exchange that must end by `deadline` (loop time)."""
        self.got_bytes = bool(self.buf)
        self.timed_out = False
        self.timer = self.loop.call_at(deadline, self._on_deadline)

    async def _more(self) -> None:
        """Wait for input, EOF, writability or the deadline; raise on EOF or timeout."""
        if self.timed_out:
            raise TimeoutError
        if self.eof:
            if self.lost is not None:
                raise ServerDisconnected(f"connection lost: {self.lost}")
            raise ServerDisconnected("the server closed the connection")
        if self.read_paused and len(self.buf) < _READ_HIGH:
            self.read_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        waiter = self.waiter = self.loop.create_future()
        await waiter
        if self.timed_out:
            raise TimeoutError

    def reusable(self) -> bool:
        return not (self.eof or self.timed_out or self.buf or self.transport is None or self.transport.is_closing())

    def end_exchange(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def close(self) -> None:
        self.end_exchange()
        self.eof = True
        if self.transport is not None:
            self.transport.abort()  # no lingering half-read answer, no TLS close_notify wait

    # -- the exchange -------------------------------------------------------

    async def send(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]
        while self.write_paused and not self.eof and not self.got_bytes:  # an early answer ends the wait
            await self._more()

    async def read_head(self) -> tuple[int, int, list[tuple[str, str]]]:
        """(minor version, status, fields) of the next response head."""
        buf = self.buf
        scanned = 0
        while True:
            match = _HEAD_END.search(buf, scanned)
            if match is not None:
                break
            if len(buf) > MAX_HEAD:
                raise ProtocolError(f"response head over {MAX_HEAD} bytes")
            scanned = max(0, len(buf) - 3)
            await self._more()
        if match.start() > MAX_HEAD:
            raise ProtocolError(f"response head over {MAX_HEAD} bytes")
        head = bytes(buf[: match.start()])
        del buf[: match.end()]
        lines = head.split(b"\n")
        status_line = _STATUS_LINE.fullmatch(lines[0])
        if status_line is None:
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        if len(lines) - 1 > MAX_FIELDS:
            raise ProtocolError(f"over {MAX_FIELDS} header fields")
        fields = []
        for line in lines[1:]:
            if line.endswith(b"\r"):
                line = line[:-1]
            name, sep, value = line.partition(b":")
            if not sep or not name or name[0] in b" \t" or name[-1] in b" \t":
                raise ProtocolError(f"bad header line {line[:80]!r}")
            fields.append((name.decode("utf-8", "surrogateescape"), value.strip(b" \t").decode("utf-8", "surrogateescape")))
        return int(status_line[1]), int(status_line[2]), fields


class Response:
    """A response whose head is in; the body is read on demand (`read_prefix`)."""

    __slots__ = ("status", "headers", "_conn", "_pool", "_mode", "_left", "_keep", "_done", "_decoder", "_encoding")

    def __init__(self, pool: Pool, conn: _Conn, status: int, headers: list[tuple[str, str]], mode: int, length: int, keep: bool, encoding: str) -> None:
        self.status = status
        self.headers = headers  # (name, value) in arrival order, repeats kept
        self._pool = pool
        self._conn: _Conn | None = conn
        self._mode = mode
        self._left = length  # bytes left in the body (_LENGTH) or in the chunk (_CHUNKED)
        self._keep = keep
        self._done = mode == _EMPTY
        self._encoding = encoding
        self._decoder = None

    def header(self, name: str) -> str | None:
        """The first value of `name` (lower case), or None."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    async def _read_raw(self, n: int) -> bytes:
        """Up to n bytes of the body as framed on the wire (b"" at its end)."""
        conn = self._conn
        buf = conn.buf
        mode = self._mode
        if self._done:
            return b""
        if mode == _LENGTH:
            while not buf:
                await conn._more()
            take = min(n, self._left, len(buf))
            self._left -= take
            self._done = self._left == 0
        elif mode == _UNTIL_CLOSE:
            while not buf:
                if conn.eof:
                    if conn.lost is not None:
                        raise ServerDisconnected(f"connection lost: {conn.lost}")
                    self._done = True
                    return b""
                await conn._more()
            take = min(n, len(buf))
        else:
            if self._left == 0:
                await self._chunk_header()
                if self._done:
                    return b""
            while not buf:
                await conn._more()
            take = min(n, self._left, len(buf))
            self._left -= take
            if self._left == 0:
                data = bytes(buf[:take])
                del buf[:take]
                await self._chunk_end()
                return data
        data = bytes(buf[:take])
        del buf[:take]
        return data

    async def _line(self, limit: int) -> bytes:
        conn = self._conn
        while True:
            end = conn.buf.find(b"\n", 0, limit + 1)
            if end >= 0:
                line = bytes(conn.buf[:end]).rstrip(b"\r")
                del conn.buf[: end + 1]
                return line
            if len(conn.buf) > limit:
                raise ProtocolError("chunk line too long")
            await conn._more()

    async def _chunk_header(self) -> None:
        line = await self._line(MAX_LINE)
        size = line.split(b";", 1)[0].strip(b" \t")
        if not size or len(size) > 16 or size.strip(b"0123456789abcdefABCDEF"):
            raise ProtocolError(f"bad chunk size {line[:40]!r}")
        self._left = int(size, 16)
        if self._left == 0:  # the last chunk: trailers to an empty line
            total = 0
            while line := await self._line(max(0, MAX_HEAD - total)):
                total += len(line) + 2
            self._done = True

    async def _chunk_end(self) -> None:
        if await self._line(2):
            raise ProtocolError("chunk data longer than its size")

    def _decode(self, data: bytes, room: int) -> bytes:
        decoder = self._decoder
        if decoder is None:
            wbits = 16 + zlib.MAX_WBITS  # gzip
            if self._encoding == "deflate":  # zlib-wrapped, or raw deflate as some servers send
                wbits = zlib.MAX_WBITS if data[:1] and data[0] & 0x0F == 8 else -zlib.MAX_WBITS
            decoder = self._decoder = zlib.decompressobj(wbits)
        try:
            return decoder.decompress(data, room)
        except zlib.error as exc:
            raise ProtocolError(f"cannot decode content-encoding {self._encoding}: {exc}") from None

    async def read_prefix(self, cap: int, needle: bytes, snippet_limit: int) -> tuple[bytes, BaseException | None]:
        """At most `cap` bytes of the (decoded) body; stop early once `needle` and the
        snippet are in. A read error comes back with what was read before it."""
        out = bytearray()
        decode = self._encoding != ""
        found = not needle
        steps = 0
        try:
            while len(out) < cap:
                steps += 1
                if not steps & 63:  # many tiny chunks already buffered never wait: let the loop (and the deadline) run
                    await asyncio.sleep(0)
                    if self._conn.timed_out:
                        raise TimeoutError
                if decode:
                    tail = self._decoder.unconsumed_tail if self._decoder is not None else b""
                    if tail:
                        data = self._decode(tail, cap - len(out))
                    else:
                        raw = await self._read_raw(65536)
                        if not raw:
                            break
                        data = self._decode(raw, cap - len(out))
                else:
                    data = await self._read_raw(cap - len(out))
                    if not data:
                        break
                before = len(out)
                out += data
                if not found:  # only the new bytes (and a needle straddling them) are searched again
                    found = out.find(needle, max(0, before - len(needle) + 1)) >= 0
                if found and needle and len(out) >= snippet_limit:
                    break
        except (ProtocolError, OSError) as exc:  # TimeoutError is an OSError
            self._keep = False
            return bytes(out), exc
        if not self._done and self._mode == _LENGTH and not decode and self._left <= len(self._conn.buf):
            del self._conn.buf[: self._left]  # the rest is already here: drop it and keep the connection
            self._left, self._done = 0, True
        return bytes(out), None

    def release(self) -> None:
        """Hand the connection back if the answer was read whole, else close it. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool._release(conn, self._keep and self._done)


class Pool:
    """Keep-alive connections per origin; `limit` / `limit_per_host` bound those in use (0 = no bound)."""

    def __init__(
        self,
        *,
        resolver: GuardedResolver,
        ssl_context: ssl.SSLContext,
        limit: int = 0,
        limit_per_host: int = 0,
        keepalive: float = 15.0,
    ) -> None:
        self._resolver = resolver
        self._ssl = ssl_context
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._keepalive = keepalive
        self._idle: dict[Origin, list[_Conn]] = {}
        self._in_use = 0
        self._in_use_per: collections.Counter[Origin] = collections.Counter()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        # Checked DNS answers per (name, port), kept as long as aiohttp kept them; one lookup at a time per name.
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._dns_pending: dict[tuple[str, int], asyncio.Task[list[str]]] = {}
        self._busy: set[_Conn] = set()  # connections in use: close() aborts them too

    async def exchange(self, origin: Origin, method: str, request: bytes, deadline: float) -> Response:
        """Send `request` (head and body bytes of a `method` request) and read the response head by `deadline`."""
        loop = asyncio.get_running_loop()
        conn = await self._acquire(loop, origin, deadline)
        head_only = method == "HEAD"
        reused = conn.expires != 0.0 and method in IDEMPOTENT
        while True:
            try:
                conn.start(deadline)
                await conn.send(request)
                return await self._answer(conn, head_only)
            except ProtocolError:
                if not (reused and not conn.got_bytes and not conn.timed_out):
                    self._release(conn, False)
                    raise
                self._busy.discard(conn)
                conn.close()  # its slot (limit, limit_per_host) goes to the new connection
            except BaseException:
                self._release(conn, False)
                raise
            reused = False  # the server had closed the idle connection: once more on a new one
            conn = await self._open(loop, origin, deadline)

    async def _answer(self, conn: _Conn, head_only: bool) -> Response:
        while True:
            minor, status, headers = await conn.read_head()
            if 100 <= status < 200 and status != 101:
                continue  # interim (100 Continue, 103 Early Hints): the answer follows
            break
        keep = minor == 1
        length = 0
        lengths: set[str] = set()
        chunked = te = False
        encoding = ""
        for name, value in headers:
            key = name.lower()
            if key == "content-length":
                lengths.add(value)
            elif key == "transfer-encoding":
                te = True
                chunked = value.rsplit(",", 1)[-1].strip().lower() == "chunked"
            elif key == "connection":
                if "close" in (token.strip().lower() for token in value.split(",")):
                    keep = False
            elif key == "content-encoding":
                encoding = value.strip().lower()
        if encoding == "x-gzip":
            encoding = "gzip"
        elif encoding not in ("gzip", "deflate"):
            encoding = ""  # identity, or one we do not decode: the bytes as sent
        if head_only or status in _NO_BODY_STATUS or status == 101:
            mode = _EMPTY
            keep = keep and status != 101
        elif te:
            if lengths:
                raise ProtocolError("both Transfer-Encoding and Content-Length")
            mode = _CHUNKED if chunked else _UNTIL_CLOSE
            keep = keep and chunked
        elif lengths:
            if len(lengths) > 1:
                raise ProtocolError("conflicting Content-Length values")
            (text,) = lengths
            if not (text.isascii() and text.isdigit()) or len(text) > 18:
                raise ProtocolError(f"bad Content-Length {text[:40]!r}")
            length = int(text)
            mode = _LENGTH if length else _EMPTY
        else:
            mode = _UNTIL_CLOSE
            keep = False
        return Response(self, conn, status, headers, mode, length, keep, encoding)

    # -- connections --------------------------------------------------------

    async def _acquire(self, loop: asyncio.AbstractEventLoop, origin: Origin, deadline: float) -> _Conn:
        if self._closed:
            raise RuntimeError("the pool is closed")
        if (self._limit or self._limit_per_host) and self._full(origin):
            async with asyncio.timeout_at(deadline):
                while self._full(origin):
                    waiter = loop.create_future()
                    self._waiters.append(waiter)
                    try:
                        await waiter
                    finally:
                        if not waiter.done():
                            waiter.cancel()
                        try:
                            self._waiters.remove(waiter)
                        except ValueError:
                            pass
                    if self._closed:
                        raise RuntimeError("the pool is closed")
        self._in_use += 1
        self._in_use_per[origin] += 1
        idle = self._idle.get(origin)
        now = loop.time()
        while idle:
            conn = idle.pop()
            if conn.expires > now and conn.reusable():
                self._busy.add(conn)
                return conn
            conn.close()
        return await self._open(loop, origin, deadline)

    async def _open(self, loop: asyncio.AbstractEventLoop, origin: Origin, deadline: float) -> _Conn:
        """A new connection in a slot already counted for it: the slot is given back if connecting fails."""
        try:
            conn = await self._connect(loop, origin, deadline)
        except BaseException:
            self._dec(origin)
            raise
        self._busy.add(conn)
        return conn

    def _full(self, origin: Origin) -> bool:
        return bool(
            (self._limit and self._in_use >= self._limit)
            or (self._limit_per_host and self._in_use_per[origin] >= self._limit_per_host)
        )

    async def _connect(self, loop: asyncio.AbstractEventLoop, origin: Origin, deadline: float) -> _Conn:
        host, port = origin.host, origin.port
        async with asyncio.timeout_at(deadline):
            if origin.literal:
                addresses = [host]
            else:
                try:
                    addresses = await self._resolve(loop, host, port)
                except OSError as exc:  # BlockedAddress, gaierror
                    raise ConnectFailed(host, port, exc) from None
            # Each address was checked by the guard: the connection goes to one of them, never to the name again.
            # Happy eyeballs as aiohttp did: a silent address does not use up the attempt's deadline.
            infos = [_addr_info(address, port) for address in addresses]
            try:
                sock = await aiohappyeyeballs.start_connection(
                    infos, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY, interleave=1, loop=loop
                )
            except OSError as exc:
                raise ConnectFailed(host, port, exc) from None
            try:
                _, conn = await loop.create_connection(
                    lambda: _Conn(loop, origin),
                    sock=sock,
                    ssl=self._ssl if origin.tls else None,
                    # a name's trailing dot is not in its certificate (as aiohttp)
                    server_hostname=host.rstrip(".") if origin.tls else None,
                )
            except OSError as exc:  # ssl.SSLError included
                sock.close()
                raise ConnectFailed(host, port, exc) from None
            except BaseException:
                sock.close()
                raise
            return conn

    async def _resolve(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[str]:
        """The addresses the guard passed for a name (cached DNS_TTL seconds)."""
        key = (host, port)
        cached = self._dns.get(key)
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        # The lookup is a task of its own that every caller waits for: one caller's deadline or cancellation
        # ends only that caller's wait, never the lookup the others share.
        lookup = self._dns_pending.get(key)
        if lookup is None:
            lookup = self._dns_pending[key] = loop.create_task(self._lookup(loop, host, port))
            lookup.add_done_callback(lambda task: self._looked_up(key, task))
        return await asyncio.shield(lookup)

    async def _lookup(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[str]:
        answers = await self._resolver.resolve(host, port, family=socket.AF_UNSPEC)
        addresses = [answer["host"] for answer in answers]
        if len(self._dns) >= 4096:
            self._dns.clear()
        self._dns[(host, port)] = (loop.time() + DNS_TTL, addresses)
        return addresses

    def _looked_up(self, key: tuple[str, int], task: asyncio.Task[list[str]]) -> None:
        del self._dns_pending[key]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning when every caller gave up

    def _dec(self, origin: Origin) -> None:
        self._in_use -= 1
        left = self._in_use_per[origin] - 1
        if left:
            self._in_use_per[origin] = left
        else:
            del self._in_use_per[origin]
        if self._waiters:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _release(self, conn: _Conn, keep: bool) -> None:
        self._busy.discard(conn)
        conn.end_exchange()
        self._dec(conn.origin)
        if not keep or self._closed or not conn.reusable():
            conn.close()
            return
        conn.expires = conn.loop.time() + self._keepalive
        self._idle.setdefault(conn.origin, []).append(conn)
        if self._sweeper is None:
            self._sweeper = conn.loop.call_at(conn.expires + 0.1, self._sweep)

    def _sweep(self) -> None:
        """Close idle connections past their keep-alive time."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        soonest = None
        for origin, idle in list(self._idle.items()):
            kept = []
            for conn in idle:
                if conn.expires > now and conn.reusable():
                    kept.append(conn)
                    soonest = conn.expires if soonest is None else min(soonest, conn.expires)
                else:
                    conn.close()
            if kept:
                self._idle[origin] = kept
            else:
                del self._idle[origin]
        if soonest is not None:
            self._sweeper = loop.call_at(soonest + 0.1, self._sweep)

    def idle_count(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()
        for conn in self._busy:  # their calls end with ServerDisconnected
            conn.close()
        for lookup in self._dns_pending.values():
            lookup.cancel()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        await asyncio.sleep(0)  # let the transports finish closing


def _addr_info(address: str, port: int) -> tuple[int, int, int, str, tuple]:
    """A checked address as socket.getaddrinfo would give it, for aiohappyeyeballs."""
    if ipaddress.ip_address(address.split("%", 1)[0]).version == 6:
        return (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))
