"""The scheduler's engine: notifies from creation to their end.

The store is the source of truth; memory holds what is due within the horizon
(the timer wheel), what is due (the ready queue) and what is leased. The
engine is the one owner of that memory. Its parts, one job each:

- memory.py      the state; into memory and out; the timer
- loading.py     horizon loading from the store
- granting.py    ready notifies to dispatchers, queue limits
- results.py     results and expiries, decided and committed
- dispatchers.py sessions: connect, credit, drain, disconnect

This module puts them together: start and stop, what the operations
(create, cancel, update, retry, trigger) ask of memory, and the snapshot that
admin and metrics read. docs/architecture.md tells the whole story.
"""

from __future__ import annotations

import asyncio
import logging

from ..store.port import Store
from .clock import Clock, SystemClock, wait_event
from .compact import Waiting
from .dispatchers import Dispatchers
from .errors import FailedPrecondition
from .granting import Granting
from .ownership import Fence
from .partitions import Partitions
from .loading import Loading
from .memory import EngineSettings
from .model import GroupStatus, NewNotify, Notification, QueueConfig, Spec, State
from .observers import Observers
from .outcomes import group_callback, new_notification
from .results import ResultIn, Results
from .sessions import Drain
from .snapshot import DispatcherView, HeldView, Snapshot

__all__ = ["Engine", "EngineSettings", "ResultIn"]
log = logging.getLogger(__name__)


class Engine(Loading, Granting, Results, Dispatchers, Partitions):
    def __init__(
        self, *, store: Store, settings: EngineSettings = EngineSettings(), clock: Clock | None = None,
        fence: Fence | None = None,
    ) -> None:  # fmt: skip
        super().__init__(store=store, settings=settings, clock=clock or SystemClock(), fence=fence)

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def settings(self) -> EngineSettings:
        return self._settings

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def observers(self) -> Observers:
        """Hooks that hear notifies created, attempted and finished (metrics, alerts)."""
        return self._observers

    # --- life cycle -----------------------------------------------------

    async def start(self, queues: list[QueueConfig] = ()) -> None:
        """Loads persisted queue settings, applies `queues` (limits from config; pause state
        stays as persisted), holds blocked ordering keys and loads what is due."""
        now = self._clock.now_ms()
        for cfg in await self._store.load_queues():
            self._queues.configure(cfg, now)
        await self.configure_queues(queues)
        for key, notify_id in await self._store.blocked_heads(partitions=self.held_partitions()):
            self._ready.hold(key, notify_id)
        await self.load()
        self._accepting = True
        self._start_loader()
        log.info("engine started: %d due or near due in memory", len(self._live))

    async def drain(self, grace_s: float) -> None:
        """Stops granting and waits up to grace_s for results of leases in flight."""
        self._accepting = False
        self._shutting_down = True
        for s in self._sessions.values():
            s.send(Drain())
        if not await wait_event(self._clock, self._no_leases, int(grace_s * 1000)):
            log.warning("stopping with %d leases in flight; they are delivered again after restart", len(self._leases))

    async def stop(self) -> None:
        """Stops timers and background work. Safe to call twice."""
        self._accepting = False
        self._stopping.set()
        for handle in (self._timer, self._rate_timer):
            if handle:
                handle.cancel()
        self._timer = self._rate_timer = None
        tasks = [t for t in (self._loader, *self._tasks) if t and not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- what the operations ask of memory ------------------------------

    def new_notification(self, new: NewNotify, now_ms: int, partition: int | None = None) -> Notification:
        """A notify as created, with an id from the engine's generator in `partition` (default:
        its ordering key's, or one held here; NotOwner when that is not held here)."""
        if partition is None:
            partition = self.partition_for(new.spec.ordering_key)
        return new_notification(new, now_ms, self._ids, partition)

    def new_id(self, ordering_key: str, now_ms: int) -> str:
        """An id for a notify created now, in its ordering key's partition or one held here
        (NotOwner when that is not held here): the create path, which builds no Notification."""
        return self._ids.new(now_ms, partition=self.partition_for(ordering_key))

    def takes(self, due_ms: int | None, notify_id: str) -> bool:
        """Whether admit() would hold a new notify due then (within what is loaded): the
        create path builds a Notification for those alone; the loader reads the others."""
        return due_ms is not None and (due_ms, notify_id) < self._cursor

    async def enqueue(self, specs: list[Spec]) -> list[Notification]:
        """Commits notifies the scheduler makes for itself (alerts), also while it stops:
        they are delivered now, or after the next start."""
        now = self._clock.now_ms()
        held = sorted(self._fence.held()) or [0]  # a partition held here: its writes are fenced
        stored = await self._store.insert([new_notification(NewNotify(s), now, self._ids, held[0]) for s in specs])
        for n in stored:
            self.admit(n)
        return stored

    def held(self, notify_id: str) -> HeldView | None:
        """The notify as memory holds it, or None if it is not in memory."""
        n = self._live.get(notify_id)
        if n is None:
            return None
        return HeldView(n.id, n.spec.ordering_key, n.state, n.due_ms, n.version, self._leases.for_notify(notify_id) is not None)

    def group_callback(self, g: GroupStatus) -> Notification:
        """The POST of a finished group's counts; the store calls this inside the transaction
        that ends the group's last member (on its writer, which may be another thread)."""
        held = sorted(self._fence.held()) or [0]  # made in a transaction that checks a held partition's epoch
        return group_callback(g, self._clock.now_ms(), self._ids, held[0])

    def forget_group(self, group_key: str) -> None:
        """CancelGroup: every unfinished member held in memory leaves it (a lease on one is revoked)."""
        for n in [n for n in self._live.values() if n.spec.group_key == group_key and not n.state.terminal]:
            self.forget(n.id, n.spec.ordering_key, revoke=True)

    def is_leased(self, notify_id: str) -> bool:
        return self._leases.for_notify(notify_id) is not None

    def withdraw(self, notify_id: str) -> Notification | None:
        """Takes a notify out of memory before its stored copy changes (UpdateNotify); its
        timer and ready entries go stale. Refused while it is leased."""
        if self.is_leased(notify_id):
            raise FailedPrecondition(f"notify {notify_id} is being delivered; update it after this attempt")
        mine = self._live.get(notify_id)
        if mine is None:
            return None
        self._drop(notify_id)
        return mine.full() if isinstance(mine, Waiting) else mine

    def put_back(self, n: Notification | None, current: Notification) -> None:
        """The store kept its copy after withdraw(): memory takes n back, or lets it go if the
        stored copy has finished meanwhile."""
        if n is None:
            return
        if current.state.terminal:
            self.forget(n.id, current.spec.ordering_key, revoke=False)  # its own commit no longer finds it
        else:
            self.admit(n)

    def replace(self, current: Notification) -> None:
        """The stored copy changed after withdraw(): a copy the loader read meanwhile is
        dropped (unless leased), and the new one comes in."""
        stale = self._live.get(current.id)
        if stale is not None and not self.is_leased(current.id):
            self._drop(current.id)
        self.admit(current)

    # --- what admin, metrics and the runner read ------------------------

    def snapshot(self) -> Snapshot:
        held_by = self._leases.by_dispatcher()
        now = self._clock.now_ms()
        return Snapshot(
            start_ms=self._start_ms,
            accepting=self._accepting,
            sent_ok=self._sent_ok,
            sent_failed=self._sent_failed,
            held=len(self._live),
            ready=len(self._ready),
            wheel=len(self._wheel),
            waiting=sum(1 for n in self._live.values() if n.state in (State.SCHEDULED, State.RETRY_WAIT) and n.due_ms is not None and n.due_ms > now),
            shutting_down=self._shutting_down,
            leases=len(self._leases),
            dispatchers=tuple(
                DispatcherView(s.dispatcher_id, s.version, s.capacity, s.credit, held_by.get(s.dispatcher_id, 0), s.connect_ms,
                               s.draining)  # fmt: skip
                for s in self._sessions.values()
            ),
            queue_configs={c.name: c for c in self._queues.configs()},
            in_flight=self._leases.by_queue(),
            ready_queues=tuple(self._ready.queue_names()),
        )

    async def counts(self) -> dict[tuple[str, State], int]:
        """Notifies by (queue, state): the store's, with the moves only memory knows (due,
        leased) applied."""
        return self._held.counts(await self._store.counts())
