"""HttpSender: performs one `OutgoingCall` over a pooled aiohttp session.

It never raises for network trouble: every attempt ends in a `CallOutcome`.
Cancellation is the exception and propagates, so a revoked lease stops its
call at once. Redirects are not followed (a 3xx is an answer like any other),
no cookies are kept, and every connection goes through the SSRF guard.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import ipaddress
import logging
import time
from datetime import timezone

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from .call import CallOutcome, ErrorKind, OutgoingCall, capped_headers
from .guard import BlockedAddress, GuardedResolver, NetworkPolicy
from .signing import sign

log = logging.getLogger(__name__)

# Framing is ours to compute from the body; a caller's value could only break it.
_FRAMING_HEADERS = ("Content-Length", "Transfer-Encoding")
_NO_CONTENT_TYPE = ("Content-Type",)


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
    ) -> None:
        self._policy = policy
        self._snippet_limit = snippet_limit
        self._body_match_limit = body_match_limit
        self._user_agent = user_agent
        self._signing_secret = signing_secret
        self._limit_per_host = limit_per_host
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None
        self._literal_refusals: dict[str, str | None] = {}

    async def start(self) -> None:
        if self._session is not None:
            return
        self._resolver = GuardedResolver(self._policy)
        connector = aiohttp.TCPConnector(
            resolver=self._resolver, limit=self._limit, limit_per_host=self._limit_per_host
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
            raise_for_status=False,
            trust_env=False,  # no proxy from the environment: it would bypass the guard
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        resolver, self._resolver = self._resolver, None
        if session is not None:
            await session.close()
        if resolver is not None:
            await resolver.close()

    async def __aenter__(self) -> HttpSender:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def send(self, call: OutgoingCall) -> CallOutcome:
        if self._session is None:
            raise RuntimeError("HttpSender.start() has not been called (or it was closed)")
        start = time.time()
        refusal = self._refuse_ip_literal(call.url)
        if refusal is not None:
            outcome = _failure(ErrorKind.BLOCKED, f"blocked: {refusal}", start)
        else:
            try:
                outcome = await self._exchange(self._session, call, start)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                kind, message = _classify(exc, call.timeout)
                outcome = _failure(kind, message, start)
        # No URL here: query strings often carry tokens.
        log.debug(
            "notify %s attempt %d: %s -> %s %s",
            call.notify_id, call.attempt, call.method, outcome.status_code, outcome.error or "ok",
        )
        return outcome

    def _refuse_ip_literal(self, url: str) -> str | None:
        """aiohttp does not resolve IP-literal hosts, so the guard checks them here.

        The answer depends only on the URL's authority, so it is kept per authority
        (the parse and the policy check cost more than the rest of a small call)."""
        authority = url.split("/", 3)[2] if url.count("/") >= 2 else url
        try:
            return self._literal_refusals[authority]
        except KeyError:
            pass
        try:
            refusal = self._policy.check(ipaddress.ip_address(URL(url).host or ""))
        except ValueError:
            refusal = None  # a name (the resolver guards it) or an invalid URL (aiohttp says so)
        if len(self._literal_refusals) >= 4096:
            self._literal_refusals.clear()
        self._literal_refusals[authority] = refusal
        return refusal

    async def _exchange(
        self, session: aiohttp.ClientSession, call: OutgoingCall, start: float
    ) -> CallOutcome:
        body = call.body
        async with session.request(
            call.method,
            call.url,
            params=call.query or None,
            data=body or None,
            headers=self._headers(call),
            # A call with a body always carries a Content-Type (ours or the caller's); one without
            # gets none, where aiohttp would add one to a POST/PUT/PATCH. Skipping costs aiohttp a
            # copy and a sort of the headers, so only the calls without a body ask for it.
            skip_auto_headers=None if body else _NO_CONTENT_TYPE,
            allow_redirects=False,
            timeout=_timeout(call.timeout),
        ) as resp:
            needle = call.body_contains.encode()
            cap = max(self._snippet_limit, self._body_match_limit if needle else 0)
            body, read_error = await _read_prefix(resp.content, cap, needle, self._snippet_limit)
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            status = resp.status
            headers = capped_headers(resp.headers.items())
        success, kind, error = _judge(call, status, body, read_error, cap)
        return CallOutcome(
            status_code=status,
            success=success,
            error=error,
            error_kind=kind,
            start_time=start,
            end_time=time.time(),
            snippet=body[: self._snippet_limit],
            retry_after=retry_after,
            headers=headers,
        )

    def _headers(self, call: OutgoingCall) -> CIMultiDict[str]:
        notify_id = call.notify_id
        ours = [("Notify-Id", notify_id), ("Notify-Attempt", str(call.attempt)), ("Idempotency-Key", notify_id)]
        if self._signing_secret is not None:
            ours += sign(self._signing_secret, notify_id, int(time.time()), call.body).items()
        if not call.headers:  # the usual call: no headers of the caller's to merge
            if call.body:
                ours.append(("Content-Type", "application/octet-stream"))
            ours.append(("User-Agent", self._user_agent))
            return CIMultiDict(ours)
        headers: CIMultiDict[str] = CIMultiDict(call.headers)
        for name in _FRAMING_HEADERS:
            headers.popall(name, None)
        headers.setdefault("User-Agent", self._user_agent)
        if call.body and "Content-Type" not in headers:
            headers["Content-Type"] = "application/octet-stream"
        for name, value in ours:
            headers[name] = value  # replaces every case-variant the caller sent
        return headers


@functools.lru_cache(maxsize=256)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    # aiohttp treats total=0 as "no timeout"; an attempt always has one.
    return aiohttp.ClientTimeout(total=max(seconds, 0.001))


async def _read_prefix(
    stream: aiohttp.StreamReader, cap: int, needle: bytes, snippet_limit: int
) -> tuple[bytes, BaseException | None]:
    """Read at most `cap` bytes; stop early once `needle` and the snippet are in."""
    buf = bytearray()
    try:
        while len(buf) < cap:
            chunk = await stream.read(cap - len(buf))
            if not chunk:
                break
            buf += chunk
            if needle and needle in buf and len(buf) >= snippet_limit:
                break
    except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
        return bytes(buf), exc
    return bytes(buf), None


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
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, BlockedAddress):
            return ErrorKind.BLOCKED, f"blocked: {exc.os_error}"
        return ErrorKind.CONNECT, f"connect failed: {exc.host}:{exc.port}: {exc.os_error}"
    if isinstance(exc, TimeoutError):
        return ErrorKind.TIMEOUT, f"timed out after {float(timeout)} s"
    # NonHttpUrlClientError (e.g. ftp://) is not an InvalidURL subclass in aiohttp 3.14.
    if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        return ErrorKind.BLOCKED, f"invalid url: {exc}"
    if isinstance(exc, aiohttp.ClientError):
        return ErrorKind.PROTOCOL, f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError):
        return ErrorKind.CONNECT, f"connect failed: {exc}"
    return ErrorKind.BLOCKED, f"invalid request: {exc}"  # ValueError from aiohttp


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
