"""The scheduler's core: notifies from creation to their end.

The store is the source of truth; memory holds what is due within the
horizon (in the timer wheel), what is due (the ready queue) and what is
leased. Everything here runs on one event loop, so a decision and the
memory change it implies happen without interleaving; store writes are
awaited after the decision and their follow-ups check that nothing has
moved on meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from ...common.ids import IdGenerator
from .errors import Unavailable
from .leases import Lease, LeaseBook
from .model import AttemptRecord, NewNotify, Notification, QueueConfig, Request, Spec, State
from .outcomes import CALLBACK_QUEUE, callback_body, new_notification
from .queues import Queues
from .ready import ReadyQueue
from .retry import Decision, Outcome, decide, defer
from .sessions import Ack, Drain, Grant, Revoke, Session
from ..store.port import ResultWrite, Store
from .validate import Limits
from .wheel import TimerWheel

log = logging.getLogger(__name__)

class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class EngineSettings:
    horizon_s: float = 300.0  # due within this is held in memory
    load_interval_s: float = 1.0
    load_batch: int = 10_000
    lease_margin_s: float = 5.0  # a lease lasts the attempt timeout plus this
    limits: Limits = Limits()


@dataclass(frozen=True, slots=True)
class ResultIn:
    """An attempt result reported by a dispatcher."""

    lease_id: str
    outcome: Outcome
    start_ms: int
    end_ms: int
    snippet: bytes = b""


class Engine:
    def __init__(self, *, store: Store, settings: EngineSettings = EngineSettings(), clock: Clock | None = None) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock or SystemClock()
        self.ids = IdGenerator()
        self.live: dict[str, Notification] = {}
        self.wheel = TimerWheel(now_ms=self.clock.now_ms())
        self.ready = ReadyQueue(is_live=lambda n: self.live.get(n.id) is n and n.state == State.PENDING)
        self.leases = LeaseBook()
        self.queues = Queues()
        self._rate_timer: asyncio.TimerHandle | None = None
        self.sessions: dict[str, Session] = {}
        self.cursor: tuple[int, str] = (0, "")
        self.start_ms = self.clock.now_ms()
        self.sent_ok = 0
        self.sent_failed = 0
        self.accepting = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None
        self._pump_soon = False
        self._loader: asyncio.Task | None = None
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._turn = 0
        self._rewind = False

    # --- life cycle -----------------------------------------------------

    async def start(self, queues: list[QueueConfig] = ()) -> None:
        """Loads persisted queue settings, applies `queues` (limits from config; pause state
        stays as persisted), holds blocked ordering keys and loads what is due."""
        now = self.clock.now_ms()
        for cfg in await self.store.load_queues():
            self.queues.configure(cfg, now)
        await self.configure_queues(queues)
        for key, notify_id in await self.store.blocked_heads():
            self.ready.hold(key, notify_id)
        await self._load_once()
        self.accepting = True
        self._loader = asyncio.create_task(self._load_loop(), name="horizon-loader")
        log.info("engine started: %d due or near due in memory", len(self.live))

    async def drain(self, grace_s: float) -> None:
        """Stops granting and waits up to grace_s for results of leases in flight."""
        self.accepting = False
        for s in self.sessions.values():
            s.send(Drain())
        deadline = time.monotonic() + grace_s
        while len(self.leases) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if len(self.leases):
            log.warning("stopping with %d leases in flight; they are delivered again after restart", len(self.leases))

    async def stop(self) -> None:
        """Stops timers and background work. Safe to call twice."""
        self.accepting = False
        self._stop.set()
        for handle in (self._timer, self._rate_timer):
            if handle:
                handle.cancel()
        self._timer = self._rate_timer = None
        tasks = [t for t in (self._loader, *self._tasks) if t and not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- memory: admission, timer, loader -------------------------------

    def admit(self, n: Notification, *, loaded: bool = False) -> None:
        """Takes a committed active notify into memory if it is due within what is loaded
        (the loader's own reads are, by definition)."""
        if n.due_ms is None or n.id in self.live or (not loaded and (n.due_ms, n.id) >= self.cursor):
            return
        if n.unreadable:
            log.error("notify %s is not delivered: %s", n.id, n.unreadable)
            return
        n.stored_state = n.state  # every way in is a committed copy
        self.live[n.id] = n
        if n.due_ms <= self.clock.now_ms():
            self._make_ready(n)
        else:
            self._schedule(n.due_ms, n)

    def _make_ready(self, n: Notification) -> None:
        n.state = State.PENDING
        self.ready.offer(n)
        self._pump()

    def _schedule(self, due_ms: int, item: Notification | Lease) -> None:
        self.wheel.add(due_ms, item)
        self._arm()

    def _arm(self) -> None:
        at = self.wheel.next_event_ms()
        if at == self._timer_at:
            return
        if self._timer:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None and not self._stop.is_set():
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + max(0, at - self.clock.now_ms()) / 1000, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        for due, item in self.wheel.advance(self.clock.now_ms()):
            if isinstance(item, Lease):
                if self.leases.get(item.lease_id) is item and item.deadline_ms == due:
                    self._spawn(self._expire(item))
            elif self.live.get(item.id) is item and item.due_ms == due and item.state in (State.SCHEDULED, State.PENDING, State.RETRY_WAIT):
                self._make_ready(item)
        self._arm()

    async def _load_loop(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self.settings.load_interval_s)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await self._load_once()
            except Unavailable as e:
                log.error("loading due notifies failed, will try again: %s", e)

    async def _load_once(self) -> None:
        """Moves what becomes due within the horizon from the store into memory."""
        until = self.clock.now_ms() + int(self.settings.horizon_s * 1000)
        while True:
            if self._rewind:
                self._rewind, self.cursor = False, (0, "")
            after = self.cursor
            self.cursor = (until, "")
            try:
                page = await self.store.load_due(after=after, until_ms=until, limit=self.settings.load_batch)
            except BaseException:
                self.cursor = after  # nothing past `after` was read
                raise
            if len(page) == self.settings.load_batch:
                self.cursor = (page[-1].due_ms, page[-1].id)
            for n in page:
                self.admit(n, loaded=True)
            if len(page) < self.settings.load_batch or self._stop.is_set():
                return
            await asyncio.sleep(0)

    def forget(self, notify_id: str, ordering_key: str, *, revoke: bool) -> None:
        """Drops a finished notify from memory and frees its ordering key."""
        mine = self.live.pop(notify_id, None)
        if mine is not None:
            mine.state = State.CANCELLED if revoke else mine.state
        lease = self.leases.for_notify(notify_id)
        if lease is not None and revoke:
            self.leases.end(lease)
            session = self.sessions.get(lease.dispatcher_id)
            if session:
                session.send(Revoke(lease.lease_id))
        self.ready.release(ordering_key, notify_id)
        self._pump()

    # --- granting -------------------------------------------------------

    def _pump(self) -> None:
        if not self._pump_soon:
            self._pump_soon = True
            asyncio.get_running_loop().call_soon(self._grant_ready)

    def _grant_ready(self) -> None:
        self._pump_soon = False
        if not self.accepting:
            return
        sessions = [s for s in self.sessions.values() if s.credit > 0 and not s.closed]
        now = self.clock.now_ms()
        allowed = lambda q: self.queues.allowed(q, self.leases.in_flight(q), now)  # noqa: E731
        while sessions and len(self.ready):
            n = self.ready.pop(allowed)
            if n is None:
                self._wake_for_tokens(now)
                break
            if n.spec.expire_at_ms is not None and now > n.spec.expire_at_ms:
                self._spawn(self._finish_unattempted(n, "expired: expire_at passed before delivery"))
                continue
            self.queues.on_grant(n.spec.queue, now)
            self._turn = (self._turn + 1) % len(sessions)
            s = sessions[self._turn]
            deadline = now + int((n.spec.timeout + self.settings.lease_margin_s) * 1000)
            lease = self.leases.grant(n, s.dispatcher_id, now_ms=now, deadline_ms=deadline)
            n.state = State.DELIVERING
            s.credit -= 1
            s.send(Grant(lease))
            self.wheel.add(deadline, lease)
            if s.credit == 0:
                sessions.remove(s)
        self._arm()

    def _wake_for_tokens(self, now: int) -> None:
        """Ready work waits on a rate limit: pump again when the first token is due."""
        wait = self.queues.ms_until_token(self.ready.queue_names(), now)
        if wait is None:
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + wait / 1000
        if self._rate_timer is not None:
            if self._rate_timer.when() <= when:
                return
            self._rate_timer.cancel()

        def wake() -> None:
            self._rate_timer = None
            self._pump()

        self._rate_timer = loop.call_at(when, wake)

    # --- queues -----------------------------------------------------------

    async def configure_queues(self, configs: list[QueueConfig]) -> list[str]:
        """Applies limits from configuration (pause state is kept); returns what changed."""
        changes = []
        for cfg in configs:
            old = self.queues.config(cfg.name)
            new = QueueConfig(cfg.name, cfg.max_concurrent, cfg.rate, cfg.burst, old.paused)
            if new != old:
                await self.update_queue(new)
                changes.append(f"queue {cfg.name}: max_concurrent={new.max_concurrent} rate={new.rate:g} burst={new.burst}")
        return changes

    async def update_queue(self, cfg: QueueConfig) -> QueueConfig:
        """Persists and applies a queue's settings."""
        self.queues.configure(cfg, self.clock.now_ms())  # checks it first
        await self.store.save_queue(cfg)
        log.info("queue %s: %s", cfg.name, "paused" if cfg.paused else
                 f"max_concurrent={cfg.max_concurrent or 'unlimited'} rate={cfg.rate or 'unlimited'}")  # fmt: skip
        self._pump()
        return cfg

    # --- dispatcher sessions and results --------------------------------

    def connect(self, *, dispatcher_id: str, version: str, capacity: int, credit: int) -> Session:
        old = self.sessions.get(dispatcher_id)
        if old is not None:
            self.disconnect(old)
            old.close()
        s = Session(dispatcher_id, version, capacity, max(0, credit), self.clock.now_ms())
        self.sessions[dispatcher_id] = s
        log.info("dispatcher %s connected (capacity %d, credit %d)", dispatcher_id, capacity, s.credit)
        self._pump()
        return s

    def disconnect(self, session: Session) -> None:
        session.closed = True
        self._reclaim_unsent(session)
        if self.sessions.get(session.dispatcher_id) is session:
            del self.sessions[session.dispatcher_id]
            log.info("dispatcher %s disconnected; its %d leases run until their deadlines",
                     session.dispatcher_id, self.leases.held_by(session.dispatcher_id))  # fmt: skip

    def _reclaim_unsent(self, session: Session) -> None:
        """Grants still in a dead stream's outbox never left: they go back to the ready queue."""
        while not session.outbox.empty():
            item = session.outbox.get_nowait()
            if isinstance(item, Grant) and self.leases.get(item.lease.lease_id) is item.lease:
                self.leases.end(item.lease)
                n = item.lease.notify
                if self.live.get(n.id) is n:
                    n.state = State.PENDING
                    self.ready.offer(n)
        self._pump()

    def set_draining(self, session: Session) -> None:
        session.credit = 0
        session.capacity = 0
        log.info("dispatcher %s is draining; no more grants to it", session.dispatcher_id)

    def add_credit(self, session: Session, credit: int) -> None:
        if credit > 0:
            session.credit = min(session.capacity, session.credit + credit)
            self._pump()

    def extend(self, session: Session, lease_id: str, by_s: float) -> None:
        lease = self.leases.get(lease_id)
        if lease is None or lease.dispatcher_id != session.dispatcher_id:
            return
        now = self.clock.now_ms()
        lease.deadline_ms = max(lease.deadline_ms, now + int(min(by_s, 600.0) * 1000))
        self._schedule(lease.deadline_ms, lease)

    async def complete(self, session: Session, results: list[ResultIn]) -> None:
        """Commits results of live leases; acks every result, refused ones too."""
        now = self.clock.now_ms()
        writes, ended = [], []
        for r in results:
            lease = self.leases.get(r.lease_id)
            if (lease is None or lease.committing or lease.dispatcher_id != session.dispatcher_id
                    or now > lease.deadline_ms):  # fmt: skip
                log.warning("result for lease %s refused: expired, unknown or not this dispatcher's (%s)",
                            r.lease_id, session.dispatcher_id)  # fmt: skip
                continue
            lease.committing = True
            ended.append(lease)
            if r.outcome.deferred:
                writes.append(self._defer(lease.notify, r.outcome, now))
                continue
            attempt = AttemptRecord(lease.attempt, r.start_ms, r.end_ms, session.dispatcher_id,
                                    r.outcome.status_code, r.outcome.error, r.outcome.success, r.snippet)  # fmt: skip
            writes.append(self._apply(lease.notify, attempt, r.outcome, now))
        await self._commit(writes, ended)
        for r in results:
            session.send(Ack(r.lease_id))

    async def _expire(self, lease: Lease) -> None:
        if self.leases.get(lease.lease_id) is not lease or lease.committing:
            return  # ended meanwhile (reclaimed from a dead stream, revoked) or its result is in
        lease.committing = True
        now = self.clock.now_ms()
        error = f"lease expired: no result from dispatcher {lease.dispatcher_id} by the deadline"
        attempt = AttemptRecord(lease.attempt, lease.granted_ms, now, lease.dispatcher_id, 0, error, False)
        await self._commit([self._apply(lease.notify, attempt, Outcome(0, False, error), now)], [lease])

    async def _finish_unattempted(self, n: Notification, reason: str) -> None:
        if self.live.get(n.id) is not n or n.state != State.PENDING:
            return  # cancelled or updated since it was popped
        log.info("notify %s FAILED: %s", n.id, reason)
        await self._commit([self._settle(n, Decision(State.FAILED, None, reason), None, self.clock.now_ms())])

    def _callback(self, n: Notification, last: AttemptRecord | None, reason: str) -> Notification | None:
        """The final-outcome POST to the notify's callback_url, as a notify of its own."""
        if not n.spec.callback_url:
            return None
        body = callback_body(n, last, reason)
        spec = Spec(
            request=Request(method="POST", url=n.spec.callback_url, json_body=body),
            queue=CALLBACK_QUEUE,
            labels={"callback_for": n.id},
        )
        return new_notification(NewNotify(spec), self.clock.now_ms(), self.ids)

    def _defer(self, n: Notification, outcome: Outcome, now: int) -> ResultWrite:
        """The dispatcher held the call back (its target is backing off): no attempt is counted."""
        d = defer(n, outcome, now)
        log.info("notify %s not sent (%s) -> %s", n.id, outcome.error, d.state.name)
        return self._settle(n, d, None, now)

    def _apply(self, n: Notification, attempt: AttemptRecord, outcome: Outcome, now: int) -> ResultWrite:
        """Counts an attempt and decides what comes next, in memory; the caller commits."""
        n.attempt_count += 1
        if n.first_attempt_ms is None:
            n.first_attempt_ms = attempt.start_ms
        d = decide(n, outcome, now)
        level = logging.INFO if d.state.terminal or not outcome.success else logging.DEBUG
        log.log(level, "notify %s attempt %d: %s -> %s (%s)", n.id, attempt.number,
                outcome.status_code or outcome.error, d.state.name, d.reason)  # fmt: skip
        return self._settle(n, d, attempt, now)

    def _settle(self, n: Notification, d: Decision, attempt: AttemptRecord | None, now: int) -> ResultWrite:
        """Applies a decision in memory; a final one brings the result callback along."""
        n.state, n.due_ms = d.state, d.due_ms
        n.complete_ms = now if d.state.terminal else None
        return ResultWrite(n, attempt, self._callback(n, attempt, d.reason) if d.state.terminal else None)

    async def _commit(self, writes: list[ResultWrite], ended: list[Lease] = ()) -> None:
        """Commits results; their leases count (queue limits, in flight) until the commit is done."""
        if not writes:
            return
        try:
            await self._save_until_committed(writes)
        except Exception:
            for w in writes:  # memory ran ahead of the store: drop it, the loader reads the stored copy again
                if self.live.get(w.notify.id) is w.notify:
                    del self.live[w.notify.id]
            self._rewind = True
            raise
        finally:
            for lease in ended:
                self.leases.end(lease)
        for w in writes:
            if w.follow_up is not None:
                self.admit(w.follow_up)
            n = w.notify
            if self.live.get(n.id) is not n:
                continue  # cancelled while the write was in flight
            if n.state.terminal:
                if n.state == State.SUCCEEDED:
                    self.sent_ok += 1
                else:
                    self.sent_failed += 1
                self.forget(n.id, n.spec.ordering_key, revoke=False)
            elif (n.due_ms, n.id) < self.cursor:
                n.stored_state = n.state
                self._schedule(n.due_ms, n)
            else:
                del self.live[n.id]  # back to the store; the loader brings it in when it nears
        self._pump()

    async def _save_until_committed(self, writes: list[ResultWrite]) -> None:
        """Results are facts: a store outage delays their commit but never drops one (a
        dropped result would put its notify back as due, and it would be sent again).
        Their leases stay committing meanwhile, so nothing else grants or expires them."""
        delay = 0.1
        while True:
            try:
                await self.store.save_results(writes)
                return
            except Unavailable as e:
                if self._stop.is_set():
                    raise
                log.warning("committing %d results failed; trying again in %.1f s: %s", len(writes), delay, e)
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                delay = min(2.0, delay * 2)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background step failed: %r", task.exception())

    # --- status ---------------------------------------------------------

    async def counts(self) -> dict[tuple[str, State], int]:
        """Notifies by (queue, state), with the states only memory knows (due, leased) moved
        out of the state the store still holds for them."""
        counts = await self.store.counts()
        for n in self.live.values():
            if n.state in (State.PENDING, State.DELIVERING) and n.stored_state not in (None, n.state):
                stored, now = (n.spec.queue, n.stored_state), (n.spec.queue, n.state)
                if counts.get(stored, 0) > 0:
                    counts[stored] -= 1
                    counts[now] = counts.get(now, 0) + 1
        return {k: v for k, v in counts.items() if v}
