"""Time as a port: what the engine asks of a clock.

Times are integer milliseconds of wall-clock time (due times are stored as
such). `SystemClock` runs callbacks on the event loop; `FakeClock` runs them
when a test moves time with `advance`, so timer, lease and retry logic is
tested without sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Callable, Protocol


class Handle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now_ms(self) -> int: ...

    def call_at(self, when_ms: int, fn: Callable[[], None]) -> Handle:
        """Runs fn once when now_ms() reaches when_ms (soon, if it already has)."""
        ...


class SystemClock:
    """The wall clock, with callbacks on the running event loop."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def call_at(self, when_ms: int, fn: Callable[[], None]) -> Handle:
        loop = asyncio.get_running_loop()
        return loop.call_at(loop.time() + max(0, when_ms - self.now_ms()) / 1000, fn)


class _FakeHandle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that only moves when told to: advance(ms) runs every callback that
    falls due on the way, in time order, with now_ms() at each one's time."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms
        self._timers: list[tuple[int, int, _FakeHandle, Callable[[], None]]] = []
        self._seq = itertools.count()

    def now_ms(self) -> int:
        return self.now

    def call_at(self, when_ms: int, fn: Callable[[], None]) -> Handle:
        handle = _FakeHandle()
        heapq.heappush(self._timers, (when_ms, next(self._seq), handle, fn))
        return handle

    def advance(self, ms: int) -> None:
        """Moves time forward by ms, running what falls due (callbacks set meanwhile included)."""
        until = self.now + ms
        while self._timers and self._timers[0][0] <= until:
            when, _, handle, fn = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not handle.cancelled:
                fn()
        self.now = until

    def pending(self) -> int:
        """Callbacks still waiting (cancelled ones not counted)."""
        return sum(1 for t in self._timers if not t[2].cancelled)


async def wait_event(clock: Clock, event: asyncio.Event, timeout_ms: int) -> bool:
    """Waits until event is set or timeout_ms of the clock's time pass; True if it was set."""
    if event.is_set():
        return True
    timer = asyncio.Event()
    handle = clock.call_at(clock.now_ms() + timeout_ms, timer.set)
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(timer.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        handle.cancel()
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    return event.is_set()
