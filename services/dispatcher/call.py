"""One HTTP attempt as plain data: what to send and what came of it.

These types are the dispatcher's domain side; the stream client converts the
scheduler's grants into `OutgoingCall` and `CallOutcome` back into results.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


# Neither type is frozen: a frozen dataclass sets each field through object.__setattr__, which
# costs ~3 µs per object on every call; nothing changes them after they are made.
@dataclass(slots=True)
class OutgoingCall:
    notify_id: str
    attempt: int
    method: str  # "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"
    url: str
    headers: Mapping[str, str]
    body: bytes  # final bytes: sent exactly as given
    query: Mapping[str, str]  # appended to the url's own query
    timeout: float  # seconds for the whole attempt
    success_codes: tuple[int, ...]  # empty = any 2xx
    body_contains: str  # "" = no body match
    fire_and_forget: bool  # any HTTP answer counts as success
    deadline: float = 0.0  # time.time() when the lease ends; 0 = not known


class ErrorKind(enum.Enum):
    NONE = "none"  # the target answered (the answer may still be a failure)
    CONNECT = "connect"  # DNS failure, refused, unreachable, TLS handshake
    TIMEOUT = "timeout"  # the attempt ran out of time
    BLOCKED = "blocked"  # refused before sending: SSRF guard or invalid request
    PROTOCOL = "protocol"  # connection dropped or broken HTTP mid-exchange
    CANCELLED = "cancelled"  # set by callers that turn a revoke into an outcome
    DEFERRED = "deferred"  # not sent: the target is backing off or at its limit (hosts.py)


_RETRYABLE_KINDS = frozenset({ErrorKind.CONNECT, ErrorKind.TIMEOUT, ErrorKind.PROTOCOL, ErrorKind.DEFERRED})


@dataclass(slots=True)
class CallOutcome:
    status_code: int  # 0 when there was no answer
    success: bool
    error: str  # "" on success, otherwise a message for people
    error_kind: ErrorKind
    start_time: float  # time.time()
    end_time: float
    snippet: bytes  # the first snippet_limit bytes of the response body
    retry_after: float | None  # seconds from Retry-After, None if absent or bad
    headers: Mapping[str, str] = field(default_factory=dict)  # the response's, capped (capped_headers)

    @property
    def retryable(self) -> bool:
        """True for failures without a usable answer (connect, timeout, protocol, deferred).

        False for blocked and cancelled calls, and for HTTP answers: whether
        an answered failure is retried (retry_codes) is the scheduler's call.
        """
        return self.error_kind in _RETRYABLE_KINDS

    @property
    def latency(self) -> float:
        return max(0.0, self.end_time - self.start_time)


MAX_HEADERS = 32
MAX_HEADER_VALUE = 256
MAX_HEADERS_TOTAL = 4096


def capped_headers(pairs) -> dict[str, str]:
    """Response headers to keep with an attempt: at most MAX_HEADERS names, each value cut
    to MAX_HEADER_VALUE characters, MAX_HEADERS_TOTAL in all; repeats joined with ", "."""
    pairs = list(pairs)
    fits = _fits(pairs)
    return fits if fits is not None else _capped(pairs)


def _capped(pairs: list) -> dict[str, str]:
    out: dict[str, str] = {}
    keys: dict[str, str] = {}  # lower-case name -> the name kept (its first spelling)
    total = 0
    for name, value in pairs:
        name, value = _printable(str(name)), _printable(str(value))
        key = keys.get(name.lower())
        if key is None and len(out) >= MAX_HEADERS:
            continue
        joined = f"{out[key]}, {value}"[:MAX_HEADER_VALUE] if key is not None else value
        grow = len(joined) + (0 if key is not None else len(name)) - (len(out[key]) if key is not None else 0)
        if total + grow > MAX_HEADERS_TOTAL:
            continue
        out[key or name] = joined
        if key is None:
            keys[name.lower()] = name
        total += grow
    return out


def _fits(pairs: list) -> dict[str, str] | None:
    """The usual answer's headers as they are, when nothing in them needs cutting, joining or
    cleaning (what capped_headers would keep unchanged); else None."""
    if len(pairs) > MAX_HEADERS:
        return None
    seen = set()
    total = 0
    for name, value in pairs:
        if type(name) is not str or type(value) is not str or len(name) > MAX_HEADER_VALUE or len(value) > MAX_HEADER_VALUE:
            return None
        if not (name.isprintable() and value.isprintable()):
            return None
        key = name.lower()
        if key in seen:
            return None
        seen.add(key)
        total += len(name) + len(value)
    return dict(pairs) if total <= MAX_HEADERS_TOTAL else None


def _printable(text: str) -> str:
    """text without unprintable characters, cut to MAX_HEADER_VALUE (most are printable already)."""
    if not text.isprintable():
        text = "".join(ch for ch in text if ch.isprintable())
    return text[:MAX_HEADER_VALUE]


class Sender(Protocol):
    """Makes one call; never raises for network trouble (HttpSender, hosts.LimitedSender)."""

    async def send(self, call: OutgoingCall) -> CallOutcome: ...
