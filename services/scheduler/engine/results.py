"""Results: an attempt's outcome (or a lease's expiry) decides the notify's next
state in memory; the store commits it; memory follows the commit.

A result counts only for a live lease whose notify has not moved since it was
granted (its version): a second result, or an expiry racing a result, finds a
newer version and changes nothing. A lease keeps counting (queue limits, in
flight) until its result is committed."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from ..store.port import ResultWrite
from .clock import wait_event
from .errors import Fenced, Unavailable
from .leases import Lease
from .memory import Memory
from .model import EMPTY, AttemptRecord, NewNotify, Notification, Request, Spec, State
from .outcomes import CALLBACK_QUEUE, callback_body, new_notification
from .retry import Decision, Outcome, decide, defer
from .sessions import Ack, Session

log = logging.getLogger(__name__)


@dataclass(slots=True)  # not frozen: one is made per result, and frozen construction costs 4x; nothing changes one
class ResultIn:
    """An attempt result reported by a dispatcher."""

    lease_id: str
    outcome: Outcome
    start_ms: int
    end_ms: int
    snippet: bytes = b""
    headers: dict[str, str] | None = None  # response headers (capped by the dispatcher)


@dataclass(eq=False, slots=True)
class _Batch:
    """Results decided in memory that wait for one store write together, and who gets the acks."""

    done: asyncio.Future  # settled once the write is committed (or has failed)
    writes: list[tuple[ResultWrite, int]] = field(default_factory=list)
    ended: list[Lease] = field(default_factory=list)
    acks: list[tuple[Session, list[str]]] = field(default_factory=list)


class Results(Memory):
    async def complete(self, session: Session, results: list[ResultIn]) -> None:
        """Commits results of live leases; acks every result, refused ones too. Returns once
        they are committed (raises if the write failed)."""
        await self.report(session, results)

    def report(self, session: Session, results: list[ResultIn]) -> asyncio.Future:
        """Decides results now and commits them together with every result reported meanwhile,
        by any stream: one store write at a time (the next one starts as soon as it is done), so
        a burst of results costs a few writes, not one each. Each result is acked once its write
        commits. Returns the write's future (shared by everything in it)."""
        writes, ended = self._decide(session, results)
        b = self._batch
        if b is None:
            loop = asyncio.get_running_loop()
            b = self._batch = _Batch(loop.create_future())
            if not self._committing:
                loop.call_soon(self._flush)  # what else arrives in this loop turn joins it
        b.writes += writes
        b.ended += ended
        b.acks.append((session, [r.lease_id for r in results]))
        return b.done

    def _decide(self, session: Session, results: list[ResultIn]) -> tuple[list[tuple[ResultWrite, int]], list[Lease]]:
        """What each result of a live lease makes of its notify, in memory; the caller commits."""
        now = self._clock.now_ms()
        writes, ended = [], []
        if results and session.stalled:
            session.stalled = False  # it reports again: it may take grants again
            self._pump()
        get, epoch, dispatcher_id, attempted = self._leases.get, self._fence.epoch, session.dispatcher_id, self._observers.attempted
        for r in results:
            lease = get(r.lease_id)
            if (lease is None or lease.notify.version != lease.version or lease.dispatcher_id != dispatcher_id
                    or now > lease.deadline_ms or epoch(lease.partition) != lease.epoch):  # fmt: skip
                log.warning("result for lease %s refused: expired, unknown, not this dispatcher's (%s) or of a"
                            " partition no longer held", r.lease_id, dispatcher_id)  # fmt: skip
                continue
            ended.append(lease)
            n, o = lease.notify, r.outcome
            if o.deferred:
                writes.append(self._defer(n, o, now))
                continue
            attempt = AttemptRecord(lease.attempt, r.start_ms, r.end_ms, dispatcher_id, o.status_code, o.error, o.success,
                                    r.snippet, r.headers or EMPTY)  # fmt: skip
            if attempted:
                self._observers.emit(attempted, n, attempt, n.due_ms or lease.granted_ms)
            writes.append(self._apply(n, attempt, o, now))
        return writes, ended

    def _flush(self) -> None:
        b, self._batch = self._batch, None
        if b is None:
            return
        if self._stopping.is_set():  # stopped before it could start: reported again after a restart
            b.done.cancel()
            return
        self._committing = True
        self._spawn(self._commit_batch(b), on_done=lambda _: self._unstarted(b))

    def _unstarted(self, b: _Batch) -> None:
        """A commit task cancelled before its first step never ran its own clean-up."""
        if not b.done.done():
            b.done.cancel()  # as _commit_batch does when cancelled: reported again after a restart
            if self._batch is not None:
                self._batch.done.cancel()
                self._batch = None
            self._committing = False

    async def _commit_batch(self, b: _Batch) -> None:
        try:
            await self._commit(b.writes, b.ended)
        except asyncio.CancelledError:
            b.done.cancel()  # stopping: the dispatchers report these again after a restart
            if self._batch is not None:
                self._batch.done.cancel()
                self._batch = None
            raise
        except Exception as e:
            log.error("results not committed (their dispatchers report them again): %s", e)
            b.done.set_exception(e)
            b.done.exception()  # said here: nobody need read it
        else:
            for session, lease_ids in b.acks:
                for lease_id in lease_ids:
                    session.send(Ack(lease_id))
            b.done.set_result(None)
        finally:
            self._committing = False
        if self._batch is not None:
            self._flush()  # what was reported meanwhile

    async def _expire(self, lease: Lease) -> None:
        if self._leases.get(lease.lease_id) is None or lease.notify.version != lease.version:
            return  # ended meanwhile (reclaimed from a dead stream, revoked) or its result is in
        if self._fence.epoch(lease.partition) != lease.epoch:
            return  # its partition was given up: the new owner delivers it again
        holder = self._sessions.get(lease.dispatcher_id)
        if holder is not None and not holder.stalled:
            holder.stalled = True
            log.warning("dispatcher %s let lease %s expire without a result; no more grants to it until it reports one",
                        lease.dispatcher_id, lease.lease_id)  # fmt: skip
        now = self._clock.now_ms()
        error = f"lease expired: no result from dispatcher {lease.dispatcher_id} by the deadline"
        attempt = AttemptRecord(lease.attempt, lease.granted_ms, now, lease.dispatcher_id, 0, error, False)
        await self._commit([self._apply(lease.notify, attempt, Outcome(0, False, error), now)], [lease])

    async def _finish_unattempted(self, n: Notification, version: int, reason: str) -> None:
        if not self._current(n, version):
            return  # cancelled or updated since it was popped
        log.info("notify %s FAILED: %s", n.id, reason)
        await self._commit([self._settle(n, Decision(State.FAILED, None, reason), None, self._clock.now_ms())])

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
        return new_notification(NewNotify(spec), self._clock.now_ms(), self._ids, self._fence.of(n.id))

    def _defer(self, n: Notification, outcome: Outcome, now: int) -> tuple[ResultWrite, int]:
        """The dispatcher held the call back (its target is backing off): no attempt is counted."""
        d = defer(n, outcome, now)
        log.info("notify %s not sent (%s) -> %s", n.id, outcome.error, d.state.name)
        return self._settle(n, d, None, now)

    def _apply(self, n: Notification, attempt: AttemptRecord, outcome: Outcome, now: int) -> tuple[ResultWrite, int]:
        """Counts an attempt and decides what comes next, in memory; the caller commits."""
        n.attempt_count += 1
        if n.first_attempt_ms is None:
            n.first_attempt_ms = attempt.start_ms
        d = decide(n, outcome, now)
        level = logging.INFO if d.state.terminal or not outcome.success else logging.DEBUG
        if log.isEnabledFor(level):  # the line's fields cost more than a filtered call
            log.log(level, "notify %s attempt %d: %s -> %s (%s)", n.id, attempt.number,
                    outcome.status_code or outcome.error, d.state.name, d.reason,
                    extra={"notify_id": n.id, "attempt": attempt.number, "queue": n.spec.queue, "status_code": outcome.status_code,
                           "latency_ms": attempt.end_ms - attempt.start_ms, "dispatcher_id": attempt.dispatcher_id})  # fmt: skip
        return self._settle(n, d, attempt, now)

    def _settle(self, n: Notification, d: Decision, attempt: AttemptRecord | None, now: int) -> tuple[ResultWrite, int]:
        """Applies a decision in memory; a final one brings the result callback along.
        Returns the write and the notify's version it is for."""
        self._held.move(n, d.state, d.due_ms)
        if d.state.terminal:
            n.complete_ms = now
            return ResultWrite(n, attempt, self._callback(n, attempt, d.reason), d.reason), n.version
        n.complete_ms = None
        return ResultWrite(n, attempt, None, d.reason), n.version

    async def _save_until_committed(self, writes: list[ResultWrite]) -> tuple[list[Notification], list[ResultWrite]]:
        """Results are facts: a store outage delays their commit but never drops one (a
        dropped result would put its notify back as due, and it would be sent again).
        Their leases stay committing meanwhile, so nothing else grants or expires them.
        A write fenced for some partitions is made again without their results (one moved
        partition must not undo the rest of a batch). Returns what the store made and the
        writes it refused."""
        delay_ms = 100
        refused: list[ResultWrite] = []
        while True:
            try:
                return await self._store.save_results(writes, group_callback=self.group_callback), refused
            except Fenced as e:
                lost, keep, fenced = set(e.partitions), [], []
                for w in writes:
                    (fenced if self._fence.of(w.notify.id) in lost else keep).append(w)
                if not keep or not fenced:
                    raise  # another scheduler owns these notifies now: nothing here may commit them
                refused += fenced
                writes = keep
            except Unavailable as e:
                if self._stopping.is_set():
                    raise
                log.warning("committing %d results failed; trying again in %d ms: %s", len(writes), delay_ms, e)
                await wait_event(self._clock, self._stopping, delay_ms)
                delay_ms = min(2000, delay_ms * 2)

    def _uncommitted(self, writes: list[tuple[ResultWrite, int]]) -> None:
        """Memory ran ahead of the store: what it decided leaves memory, and the loader reads the
        stored copy again (where the partition is still this scheduler's)."""
        for w, version in writes:
            if self._current(w.notify, version):
                self._drop(w.notify.id)
        self._rewind = True

    async def _commit(self, writes: list[tuple[ResultWrite, int]], ended: list[Lease] = ()) -> None:
        """Commits results; their leases count (queue limits, in flight) until the commit is done."""
        if not writes:
            return
        try:
            made, refused = await self._save_until_committed([w for w, _ in writes])
        except Exception:
            self._uncommitted(writes)
            raise
        finally:
            for lease in ended:
                self._end_lease(lease)
        if refused:
            log.warning("%d results not committed: their partitions moved to another scheduler", len(refused))
            gone = {id(w) for w in refused}
            self._uncommitted([(w, v) for w, v in writes if id(w) in gone])
            writes = [(w, v) for w, v in writes if id(w) not in gone]
        for follow_up in made:  # group callbacks
            self.admit(follow_up)
        current, committed = self._current, self._held.committed
        for w, version in writes:
            if w.follow_up is not None:
                self.admit(w.follow_up)
            n = w.notify
            if not current(n, version):
                continue  # cancelled while the write was in flight
            committed(n)
            if n.state.terminal:
                if n.state == State.SUCCEEDED:
                    self._sent_ok += 1
                else:
                    self._sent_failed += 1
                self.forget(n.id, n.spec.ordering_key, revoke=False)
                self._observers.emit(self._observers.finished, n, w.attempt, w.reason)
            elif (n.due_ms, n.id) < self._cursor:
                self._schedule(n)
            else:
                self._drop(n.id)  # back to the store; the loader brings it in when it nears
        self._pump()
