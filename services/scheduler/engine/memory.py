"""The engine's state and the moves every part of it makes: taking a notify into
memory, the timer, becoming due, dropping it again.

Only the engine's own modules (loading, granting, results, dispatchers, core)
touch this state; everyone else calls the Engine's methods or reads its
snapshot. Everything runs on one event loop, so a decision and the memory
change it implies happen without interleaving; what refers to a notify across
an await keeps its version and checks it afterwards.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ...common.ids import IdGenerator
from ..store.port import Store
from .clock import Clock, Handle
from .compact import SharedSpecs, Waiting
from .leases import Lease, LeaseBook
from .model import Notification, State
from .observers import Observers
from .ownership import DEFAULT_PARTITIONS, Fence, SoleOwnership
from .queues import Queues
from .ready import ReadyQueue
from .sessions import Revoke, Session
from .transitions import Held
from .limits import Limits, notify_size
from .wheel import TimerWheel

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineSettings:
    horizon_s: float = 300.0  # due within this is held in memory
    load_interval_s: float = 1.0
    load_batch: int = 10_000
    lease_margin_s: float = 5.0  # a lease lasts the attempt timeout plus this
    reconnect_grace_s: float = 5.0  # a dropped dispatcher's leases wait this long for it to come back
    limits: Limits = Limits()
    max_in_memory: int = 100_000  # units held at once (see units()); beyond it due work waits in the store


def units(n: Notification, size: int | None = None) -> int:
    """What a notify counts against max_in_memory: one, and one more per 4 KiB of its request,
    so a bound holds bytes as well as notifies (a 1 MiB body counts about 256). size: its
    limits.notify_size when the caller has it already (the create path)."""
    return 1 + (notify_size(n.spec) if size is None else size) // 4096


class Memory:
    """What is due within the horizon (the wheel), due (the ready queue), leased
    (the lease book), and the connected dispatchers."""

    def __init__(self, *, store: Store, settings: EngineSettings, clock: Clock, fence: Fence | None = None) -> None:
        self._store = store
        self._fence = fence or SoleOwnership(getattr(store, "partitions", DEFAULT_PARTITIONS)).fence
        self._next_part = 0
        self._settings = settings
        self._clock = clock
        self._ids = IdGenerator()
        self._live: dict[str, Notification] = {}
        self._specs = SharedSpecs()  # what held notifies alike share (compact.py)
        self._held = Held()
        self._wheel = TimerWheel(now_ms=clock.now_ms())
        self._ready = ReadyQueue()
        self._leases = LeaseBook()
        self._queues = Queues()
        self._sessions: dict[str, Session] = {}
        self._cursor: tuple[int, str] = (0, "")  # loaded up to here (due_ms, id)
        self._rewind = False  # a failed commit: read from the start again
        self._starved = False  # memory was full: the loader left due work in the store
        self._units = 0  # what the notifies in _live count against max_in_memory
        self._weights: dict[str, int] = {}  # the count of each one that counts more than 1, as taken in
        self._loader: asyncio.Task | None = None
        self._loading = asyncio.Lock()  # one load at a time
        self._accepting = False
        self._stopping = asyncio.Event()
        self._no_leases = asyncio.Event()
        self._no_leases.set()
        self._timer: Handle | None = None
        self._timer_at: int | None = None
        self._rate_timer: Handle | None = None
        self._rate_at: int | None = None
        self._pump_soon = False
        self._batch = None  # results waiting for the next store write (results.py)
        self._committing = False  # a results write is in flight
        self._turn = 0
        self._tasks: set[asyncio.Task] = set()
        self._start_ms = clock.now_ms()
        self._sent_ok = 0
        self._sent_failed = 0
        self._observers = Observers()  # metrics and alerts subscribe (created, attempted, finished)
        self._shutting_down = False  # drain() began: the process is stopping
        self._drained: set[str] = set()  # dispatcher ids an operator drained

    # --- into memory and out ----------------------------------------------

    def admit(self, n: Notification, *, loaded: bool = False, size: int | None = None) -> None:
        """Takes a committed active notify into memory if it is due within what is loaded
        (the loader's own reads are, by definition). One that is not due yet waits in its
        compact form (compact.Waiting); the caller's object stays as it is. size: its
        limits.notify_size if the caller computed it (the create path), else computed here."""
        if n.due_ms is None or n.id in self._live or (not loaded and (n.due_ms, n.id) >= self._cursor):
            return
        if n.unreadable:
            log.error("notify %s is not delivered: %s", n.id, n.unreadable)
            return
        weight = units(n, size)
        if self._live and self._units + weight > self._settings.max_in_memory:
            # Memory is full: it stays in the store; the loader reads it again from here.
            self._cursor = min(self._cursor, (n.due_ms, ""))
            self._starved = True
            return
        due = n.due_ms <= self._clock.now_ms()
        if isinstance(n, Waiting):  # one withdraw() gave back
            n = n.full()
        if not due:
            n = Waiting(n, self._specs.spec(n.spec))
        self._held.take(n)
        self._live[n.id] = n
        if weight > 1:
            self._weights[n.id] = weight
        self._units += weight
        if due:
            self._make_ready(n)
        else:
            self._schedule(n)

    def _drop(self, notify_id: str) -> None:
        """The notify held under notify_id leaves memory: every entry that refers to it goes stale."""
        n = self._live.pop(notify_id, None)
        if n is not None:
            self._units -= self._weights.pop(notify_id, 1)
            self._held.release(n)
            if self._starved and self._units <= self._settings.max_in_memory * 9 // 10:
                self._starved = False  # room again: page in what waits in the store now, not at the next tick
                self._spawn(self.load())

    def forget(self, notify_id: str, ordering_key: str, *, revoke: bool) -> None:
        """Drops a finished notify from memory and frees its ordering key; with revoke,
        a lease on it ends and its dispatcher is told."""
        mine = self._live.get(notify_id)
        if mine is not None:
            if revoke and mine.state != State.CANCELLED and not mine.state.terminal:
                self._held.move(mine, State.CANCELLED, None)
            self._drop(notify_id)
        lease = self._leases.for_notify(notify_id)
        if lease is not None and revoke:
            self._end_lease(lease)
            session = self._sessions.get(lease.dispatcher_id)
            if session:
                session.send(Revoke(lease.lease_id))
        self._ready.release(ordering_key, notify_id)
        self._pump()

    def _current(self, n: Notification, version: int) -> bool:
        """n is in memory and has not changed since `version` was taken."""
        return n.version == version

    # --- the timer ----------------------------------------------------------

    def _make_ready(self, n: Notification) -> None:
        self._held.move(n, State.PENDING, n.due_ms)
        self._ready.offer(n)
        self._pump()

    def _schedule(self, n: Notification | Waiting) -> None:
        if not isinstance(n, Waiting):  # a Waiting is scheduled once, at its version 1
            n.timer_version = n.version
        self._wheel.add_timed(n)  # the notify is its own entry: no tuple per held notify
        self._arm()

    def _schedule_lease(self, lease: Lease) -> None:
        # By id, not the lease: an entry stays in the wheel until its deadline (lazy removal), and a
        # lease that ended would keep its notify, spec and request alive (and scanned by the cyclic
        # GC) that long; an (int, str) tuple is neither.
        self._wheel.add(lease.deadline_ms, lease.lease_id)
        self._arm()

    def _arm(self) -> None:
        at = self._wheel.next_event_ms()
        if at == self._timer_at:
            return
        if self._timer:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None and not self._stopping.is_set():
            self._timer = self._clock.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self._clock.now_ms()
        for entry in self._wheel.advance(now):
            if isinstance(entry, tuple):  # a lease's deadline: (deadline_ms, lease_id)
                lease = self._leases.get(entry[1])
                if lease is not None and lease.deadline_ms == entry[0]:
                    self._spawn(self._expire(lease))
            elif self._current(entry, entry.timer_version) and entry.due_ms is not None and entry.due_ms <= now:
                if isinstance(entry, Waiting):  # unpacked: the full notify takes its place
                    entry = self._live[entry.id] = entry.full()
                self._make_ready(entry)  # unchanged since it was put in the wheel, and due
        self._arm()

    # The other parts' steps this one calls (Engine puts the parts together):
    async def _expire(self, lease: Lease) -> None:  # results.py
        raise NotImplementedError

    async def _finish_unattempted(self, n: Notification, version: int, reason: str) -> None:  # results.py
        raise NotImplementedError

    def _pump(self) -> None:  # granting.py
        raise NotImplementedError

    async def _load_range(self, until: int, partitions: frozenset[int] | None, after: tuple[int, str] | None = None) -> int:
        raise NotImplementedError  # loading.py

    # --- leases and background steps ----------------------------------------

    def _end_lease(self, lease: Lease) -> None:
        self._leases.end(lease)
        if not len(self._leases):
            self._no_leases.set()

    def _spawn(self, coro, on_done: Callable[[asyncio.Task], None] | None = None) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        if on_done is not None:
            task.add_done_callback(on_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background step failed: %r", task.exception())
