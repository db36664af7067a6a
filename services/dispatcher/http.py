"""HttpSender: performs one `OutgoingCall` over a keep-alive connection pool (wire.py).

It never raises for network trouble: every attempt ends in a `CallOutcome`.
Cancellation is the exception and propagates (the connection it was using is
closed, never pooled), so a revoked lease stops its call at once. Redirects are
not followed (a 3xx is an answer like any other), no cookies are kept, no proxy
is taken from the environment, and every connection goes through the SSRF guard:
IP-literal hosts are checked here, names by `GuardedResolver`, and the
connection goes to the checked address. This module is the policy (headers,
verdict, error kinds); wire.py speaks HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import logging
import ssl
import time
from dataclasses import dataclass
from datetime import timezone

from aiohttp.abc import AbstractResolver
from multidict import CIMultiDict
from yarl import URL

from .call import CallOutcome, ErrorKind, OutgoingCall, capped_headers
from .guard import BlockedAddress, GuardedResolver, NetworkPolicy
from .signing import sign
from .wire import ConnectFailed, Origin, Pool, ProtocolError, check_header, check_method

log = logging.getLogger(__name__)

# Framing is ours to compute from the body; a caller's value could only break it.
_FRAMING_HEADERS = ("Content-Length", "Transfer-Encoding")
# What aiohttp sent by default, kept so that targets see the same request as before.
_ACCEPT = "*/*"
_ACCEPT_ENCODING = "gzip, deflate"
# Methods that get no "Content-Length: 0" without a body (as aiohttp did).
_GET_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_MAX_TARGETS = 4096
_MAX_TIMEOUT = 1e7  # seconds: an event loop's timer cannot take infinity


class InvalidURL(ValueError):
    """Not an absolute http(s) URL with a host."""


@dataclass(frozen=True, slots=True)
class _Target:
    url: URL
    origin: Origin
    host: str  # the Host header
    path: str  # the request target: path and query, no fragment
    refusal: str | None  # the guard's verdict on an IP-literal host


class HttpSender:
    def __init__(
        self,
        *,
        policy: NetworkPolicy,
        snippet_limit: int = 4096,
        body_match_limit: int = 65536,
        user_agent: str = "NotifyAgent/0.1",
        signing_secret: bytes | None = None,
        limit_per_host: int = 0,
        limit: int = 0,
        keepalive: float = 15.0,
        resolver: AbstractResolver | None = None,
    ) -> None:
        check_header("User-Agent", user_agent)
        self._policy = policy
        self._snippet_limit = snippet_limit
        self._body_match_limit = body_match_limit
        self._user_agent = user_agent
        self._signing_secret = signing_secret
        self._limit_per_host = limit_per_host
        self._limit = limit
        self._keepalive = keepalive
        self._inner_resolver = resolver  # names -> addresses before the guard (None: the system's)
        self._pool: Pool | None = None
        self._resolver: GuardedResolver | None = None
        self._targets: dict[str, _Target] = {}
        self._methods: dict[str, str] = {}  # method as asked -> as sent (upper case), checked

    async def start(self) -> None:
        if self._pool is not None:
            return
        self._resolver = GuardedResolver(self._policy, self._inner_resolver)
        # Verification on against the system CAs (SSL_CERT_FILE / SSL_CERT_DIR honoured), as aiohttp did.
        context = ssl.create_default_context()
        context.set_alpn_protocols(["http/1.1"])
        self._pool = Pool(
            resolver=self._resolver, ssl_context=context, limit=self._limit,
            limit_per_host=self._limit_per_host, keepalive=self._keepalive,
        )  # fmt: skip

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        resolver, self._resolver = self._resolver, None
        if pool is not None:
            await pool.close()
        if resolver is not None:
            await resolver.close()

    async def __aenter__(self) -> HttpSender:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def pool(self) -> Pool | None:
        return self._pool

    async def send(self, call: OutgoingCall) -> CallOutcome:
        pool = self._pool
        if pool is None:
            raise RuntimeError("HttpSender.start() has not been called (or it was closed)")
        start = time.time()
        try:
            target = self._target(call.url)
            if target.refusal is not None:
                outcome = _failure(ErrorKind.BLOCKED, f"blocked: {target.refusal}", start)
            else:
                outcome = await self._exchange(pool, call, target, start)
        except asyncio.CancelledError:
            raise
        except (ConnectFailed, ProtocolError, OSError, ValueError) as exc:
            kind, message = _classify(exc, call.timeout)
            outcome = _failure(kind, message, start)
        # No URL here: query strings often carry tokens.
        log.debug(
            "notify %s attempt %d: %s -> %s %s",
            call.notify_id, call.attempt, call.method, outcome.status_code, outcome.error or "ok",
        )
        return outcome

    def _target(self, url: str) -> _Target:
        """Where a URL goes and how it is asked for; kept per URL (the parse and the
        guard's verdict on an IP literal cost more than the rest of a small call)."""
        try:
            return self._targets[url]
        except KeyError:
            pass
        try:
            parsed = URL(url)
        except (ValueError, TypeError) as exc:
            raise InvalidURL(f"{url}: {exc}") from None
        if parsed.scheme not in ("http", "https") or not parsed.raw_host:
            raise InvalidURL(url)
        host = parsed.raw_host
        try:
            refusal = self._policy.check(ipaddress.ip_address(host))
            literal = True
        except ValueError:
            refusal, literal = None, False  # a name: GuardedResolver checks what it resolves to
        port = parsed.port
        if port is None:
            raise InvalidURL(url)
        target = _Target(
            url=parsed,
            origin=Origin(tls=parsed.scheme == "https", host=host, port=port, literal=literal),
            host=parsed.host_port_subcomponent or host,
            path=parsed.raw_path_qs or "/",
            refusal=refusal,
        )
        if len(self._targets) >= _MAX_TARGETS:
            self._targets.clear()
        self._targets[url] = target
        return target

    async def _exchange(self, pool: Pool, call: OutgoingCall, target: _Target, start: float) -> CallOutcome:
        request = self._request(call, target)
        deadline = asyncio.get_running_loop().time() + min(max(call.timeout, 0.001), _MAX_TIMEOUT)
        resp = await pool.exchange(target.origin, request, deadline, request.startswith(b"HEAD "))
        try:
            needle = call.body_contains.encode()
            cap = max(self._snippet_limit, self._body_match_limit if needle else 0)
            body, read_error = await resp.read_prefix(cap, needle, self._snippet_limit)
        finally:
            resp.release()  # pooled only if the answer was read whole
        status = resp.status
        success, kind, error = _judge(call, status, body, read_error, cap)
        return CallOutcome(
            status_code=status,
            success=success,
            error=error,
            error_kind=kind,
            start_time=start,
            end_time=time.time(),
            snippet=body[: self._snippet_limit],
            retry_after=parse_retry_after(resp.header("retry-after")),
            headers=capped_headers(resp.headers),
        )

    def _request(self, call: OutgoingCall, target: _Target) -> bytes:
        """The request's bytes: request line, header fields, body."""
        method = self._methods.get(call.method)
        if method is None:
            method = call.method.upper()
            check_method(method)
            if len(self._methods) < 64:
                self._methods[call.method] = method
        path = target.path
        if call.query:
            path = target.url.extend_query(call.query).raw_path_qs
        body = call.body
        headers = self._headers(call)
        lines = [f"{method} {path} HTTP/1.1"]
        if isinstance(headers, list):  # ours only: names known, values checked
            lines.append(f"Host: {target.host}")
            lines.extend(f"{name}: {value}" for name, value in headers)
            lines.append(f"Accept: {_ACCEPT}\r\nAccept-Encoding: {_ACCEPT_ENCODING}")
        else:
            if "Host" not in headers:
                lines.append(f"Host: {target.host}")
            for name, value in headers.items():
                check_header(name, value)
                lines.append(f"{name}: {value}")
            if "Accept" not in headers:
                lines.append(f"Accept: {_ACCEPT}")
            if "Accept-Encoding" not in headers:
                lines.append(f"Accept-Encoding: {_ACCEPT_ENCODING}")
        if body:
            lines.append(f"Content-Length: {len(body)}")
        elif method not in _GET_METHODS:
            lines.append("Content-Length: 0")
        lines.append("\r\n")
        head = "\r\n".join(lines).encode()
        return head + body if body else head

    def _headers(self, call: OutgoingCall) -> list[tuple[str, str]] | CIMultiDict[str]:
        """Our fields (a list) when the caller sent none, else the merge (a CIMultiDict)."""
        notify_id = call.notify_id
        check_header("Notify-Id", notify_id)
        ours = [("Notify-Id", notify_id), ("Notify-Attempt", str(call.attempt)), ("Idempotency-Key", notify_id)]
        if self._signing_secret is not None:
            ours += sign(self._signing_secret, notify_id, int(time.time()), call.body).items()
        if not call.headers:  # the usual call: no headers of the caller's to merge
            if call.body:
                ours.append(("Content-Type", "application/octet-stream"))
            ours.append(("User-Agent", self._user_agent))
            return ours
        headers: CIMultiDict[str] = CIMultiDict(call.headers)
        for name in _FRAMING_HEADERS:
            headers.popall(name, None)
        headers.setdefault("User-Agent", self._user_agent)
        if call.body and "Content-Type" not in headers:
            headers["Content-Type"] = "application/octet-stream"
        for name, value in ours:
            headers[name] = value  # replaces every case-variant the caller sent
        return headers


def _judge(
    call: OutgoingCall, status: int, body: bytes, read_error: BaseException | None, cap: int
) -> tuple[bool, ErrorKind, str]:
    """Success, error kind and message for an answered call.

    A failed body read only matters when the verdict needs the body.
    """
    if call.fire_and_forget:
        return True, ErrorKind.NONE, ""
    if not (status in call.success_codes if call.success_codes else 200 <= status < 300):
        return False, ErrorKind.NONE, f"HTTP {status}"
    if call.body_contains and call.body_contains.encode() not in body:
        if read_error is not None:
            kind, message = _classify(read_error, call.timeout)
            return False, kind, f"HTTP {status}, then reading the body: {message}"
        return False, ErrorKind.NONE, (
            f"HTTP {status} but the body does not contain {call.body_contains!r}"
            f" (searched the first {min(len(body), cap)} bytes)"
        )
    return True, ErrorKind.NONE, ""


def _classify(exc: BaseException, timeout: float) -> tuple[ErrorKind, str]:
    if isinstance(exc, ConnectFailed):
        if isinstance(exc.os_error, BlockedAddress):
            return ErrorKind.BLOCKED, f"blocked: {exc.os_error}"
        return ErrorKind.CONNECT, f"connect failed: {exc.host}:{exc.port}: {exc.os_error}"
    if isinstance(exc, TimeoutError):
        return ErrorKind.TIMEOUT, f"timed out after {float(timeout)} s"
    if isinstance(exc, InvalidURL):
        return ErrorKind.BLOCKED, f"invalid url: {exc}"
    if isinstance(exc, ProtocolError):
        return ErrorKind.PROTOCOL, f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError):
        return ErrorKind.CONNECT, f"connect failed: {exc}"
    return ErrorKind.BLOCKED, f"invalid request: {exc}"  # a header or method that would break the request


def _failure(kind: ErrorKind, message: str, start: float) -> CallOutcome:
    return CallOutcome(
        status_code=0,
        success=False,
        error=message,
        error_kind=kind,
        start_time=start,
        end_time=time.time(),
        snippet=b"",
        retry_after=None,
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
