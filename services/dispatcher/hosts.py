"""Per-target protection: an adaptive concurrency limit per host (AIMD).

A target is `host:port`. Each starts at the ceiling (the dispatcher's
capacity). A 429 or 503 answer halves the target's limit (once per round: an
answer only cuts if its call started after the last cut) and backs the target
off, for the answer's Retry-After or else a short exponential backoff. Every
other answer raises the limit by one, back up to the ceiling. Calls that got
no answer (refused, timed out) change nothing.

A target holds at most twice its limit of the dispatcher's slots: `limit`
calls running and at most `limit` waiting for a free place or for its backoff
to end. A call beyond that, or one whose wait would outlast its lease, is not
sent: it ends at once as a retryable DEFERRED outcome with the remaining
backoff as retry_after, so the scheduler tries it again later and the slot
goes to other targets. One sick target cannot take the dispatcher.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from yarl import URL

from .call import CallOutcome, ErrorKind, OutgoingCall, Sender

log = logging.getLogger(__name__)
SLOWDOWN_CODES = frozenset({429, 503})
LEASE_SAFETY_S = 0.5  # a waiting call still has its whole timeout and this much left of its lease
NO_DEADLINE_WAIT_S = 5.0  # the longest wait for a call that carries no lease deadline
DEFER_HINT_S = 1.0  # retry_after for a call deferred because its target is at its limit


class HostBusy(Exception):
    """The call was not sent: its target is backing off or at its limit."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Slot(NamedTuple):
    key: str
    epoch: int  # the target's cut count when the call started


class HostState(NamedTuple):
    key: str
    limit: int
    running: int
    waiting: int
    backoff_s: float  # left of the current backoff


@dataclass(eq=False)
class _Host:
    key: str
    limit: int
    running: int = 0
    waiting: int = 0
    backoff_until: float = 0.0
    epoch: int = 0  # cuts so far; answers to calls from an older epoch do not cut again
    streak: int = 0  # cuts since the last good answer: the exponent of the backoff
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class HostLimiter:
    def __init__(
        self, *, ceiling: int, base_backoff_s: float = 0.1, max_backoff_s: float = 5.0,
        max_hold_s: float = 300.0, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self._ceiling = max(1, ceiling)
        self._base_backoff = base_backoff_s
        self._max_backoff = max_backoff_s
        self._max_hold = max_hold_s  # longest backoff a Retry-After can impose on the whole target
        self._clock = clock
        self._hosts: dict[str, _Host] = {}

    @property
    def ceiling(self) -> int:
        return self._ceiling

    def set_ceiling(self, ceiling: int) -> None:
        self._ceiling = max(1, ceiling)
        for host in list(self._hosts.values()):
            host.limit = min(host.limit, self._ceiling)
            host.wake()
            self._forget_if_idle(host)

    def limit(self, key: str) -> int:
        host = self._hosts.get(key)
        return host.limit if host else self._ceiling

    def snapshot(self) -> list[HostState]:
        now = self._clock()
        return [HostState(h.key, h.limit, h.running, h.waiting, max(0.0, h.backoff_until - now)) for h in self._hosts.values()]

    async def acquire(self, key: str, max_wait: float) -> Slot:
        """A place to call `key`; waits at most max_wait seconds, else raises HostBusy."""
        host = self._hosts.get(key) or self._hosts.setdefault(key, _Host(key, self._ceiling))
        now = self._clock()
        if host.backoff_until <= now and host.running < host.limit:
            host.running += 1
            return Slot(key, host.epoch)
        give_up = now + max(0.0, max_wait)
        backoff = host.backoff_until - now
        if host.waiting >= host.limit:
            self._forget_if_idle(host)
            raise HostBusy(f"{key} is at its limit of {host.limit} calls", max(backoff, DEFER_HINT_S))
        if host.backoff_until > give_up:
            self._forget_if_idle(host)
            raise HostBusy(f"{key} is backing off for {backoff:.1f} s more (it answered 429/503)", backoff)
        host.waiting += 1
        try:
            while True:
                now = self._clock()
                if host.backoff_until <= now and host.running < host.limit:
                    host.running += 1
                    return Slot(key, host.epoch)
                backoff = max(0.0, host.backoff_until - now)
                if host.waiting > host.limit:  # the limit was cut while we waited
                    raise HostBusy(f"{key} is at its limit of {host.limit} calls", max(backoff, DEFER_HINT_S))
                if host.backoff_until > give_up or now >= give_up:
                    raise HostBusy(f"{key} stayed at its limit of {host.limit} calls or backing off",
                                   max(backoff, DEFER_HINT_S))  # fmt: skip
                until = host.backoff_until if host.backoff_until > now else give_up
                try:
                    await asyncio.wait_for(host.changed.wait(), until - now)
                except TimeoutError:
                    pass
        finally:
            host.waiting -= 1
            self._forget_if_idle(host)

    def release(self, slot: Slot, outcome: CallOutcome | None) -> None:
        """Ends a call: its answer (None if it never finished) adjusts the target's limit."""
        host = self._hosts[slot.key]
        host.running -= 1
        status = outcome.status_code if outcome is not None else 0
        if status in SLOWDOWN_CODES:
            self._slow_down(host, slot, status, outcome.retry_after if outcome else None)
        elif status:
            host.streak = 0
            if host.limit < self._ceiling:
                host.limit += 1
                if host.limit == self._ceiling:
                    log.info("target %s recovered: limit back at %d", host.key, host.limit)
                else:
                    log.debug("target %s: limit %d -> %d", host.key, host.limit - 1, host.limit)
        if host.waiting:  # nobody waits: no wake-up (it costs a new Event per call)
            host.wake()
        self._forget_if_idle(host)

    def _slow_down(self, host: _Host, slot: Slot, status: int, retry_after: float | None) -> None:
        old, cut = host.limit, slot.epoch == host.epoch
        if cut:
            host.limit = max(1, host.limit // 2)
            host.epoch += 1
            host.streak += 1
        if retry_after is not None:
            pause = min(retry_after, self._max_hold)
        else:
            pause = min(self._max_backoff, self._base_backoff * 2 ** max(0, host.streak - 1))
        host.backoff_until = max(host.backoff_until, self._clock() + pause)
        if cut:
            log.warning("target %s answered %d: limit %d -> %d, backing off %.2f s%s", host.key, status, old,
                        host.limit, pause, " (Retry-After)" if retry_after is not None else "")  # fmt: skip

    def _forget_if_idle(self, host: _Host) -> None:
        """A target back to normal and unused is dropped, so the table holds only targets with a story."""
        if (
            host.running == 0 and host.waiting == 0 and host.limit >= self._ceiling
            and host.backoff_until <= self._clock() and self._hosts.get(host.key) is host
        ):  # fmt: skip
            del self._hosts[host.key]


def host_key(url: str) -> str:
    """`host:port` of a URL, "" when it has none (the sender reports such URLs itself).

    The answer depends only on the scheme and authority, so it is kept per URL prefix up to the path
    (a yarl parse costs more than the rest of the limiter's work on a call)."""
    prefix = url.split("/", 3)[:3]
    authority = "/".join(prefix)
    try:
        return _KEYS[authority]
    except KeyError:
        pass
    try:
        u = URL(url)
    except (ValueError, TypeError):
        key = ""
    else:
        key = "" if not u.host else f"{u.host.lower()}:{u.port}" if u.port is not None else u.host.lower()
    if len(_KEYS) >= 4096:
        _KEYS.clear()
    _KEYS[authority] = key
    return key


_KEYS: dict[str, str] = {}


class LimitedSender:
    """A Sender behind the HostLimiter: same `send(call) -> CallOutcome`, never raises for a busy target."""

    def __init__(self, sender: Sender, limiter: HostLimiter, *, clock: Callable[[], float] = time.time) -> None:
        self._sender = sender
        self._limiter = limiter
        self._clock = clock

    async def send(self, call: OutgoingCall) -> CallOutcome:
        key = host_key(call.url)
        if not key:
            return await self._sender.send(call)
        now = self._clock()
        max_wait = call.deadline - now - call.timeout - LEASE_SAFETY_S if call.deadline else NO_DEADLINE_WAIT_S
        try:
            slot = await self._limiter.acquire(key, max_wait)
        except HostBusy as busy:
            now = self._clock()
            return CallOutcome(0, False, f"not sent: {busy}", ErrorKind.DEFERRED, now, now, b"", busy.retry_after)
        outcome = None
        try:
            outcome = await self._sender.send(call)
            return outcome
        finally:
            self._limiter.release(slot, outcome)
