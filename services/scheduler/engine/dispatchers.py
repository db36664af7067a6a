"""Dispatcher sessions: connect, credit, drain, lease extensions, disconnect.

A dispatcher that reconnects with the same id replaces its old session; the
leases it holds run on (it may still report them) until their deadlines, or
until the reconnect grace (`reconnect_grace_s`) passes without it coming back:
then they go back to the ready queue (at least once: a call it already made
is made again). Grants that never left a closed session's outbox go back to
the ready queue at once."""

from __future__ import annotations

import logging

from .memory import Memory
from .model import State
from .sessions import Drain, Session

log = logging.getLogger(__name__)
MAX_EXTEND_S = 600.0


class Dispatchers(Memory):
    def connect(self, *, dispatcher_id: str, version: str, capacity: int, credit: int) -> Session:
        old = self._sessions.get(dispatcher_id)
        if old is not None:
            self.disconnect(old)
        s = Session(dispatcher_id, version, capacity, max(0, credit), self._clock.now_ms())
        self._sessions[dispatcher_id] = s
        log.info("dispatcher %s connected (capacity %d, credit %d)", dispatcher_id, capacity, s.credit)
        if dispatcher_id in self._drained:  # a drained dispatcher that reconnects stays drained
            self.set_draining(s)
            s.send(Drain())
        self._pump()
        return s

    def disconnect(self, session: Session) -> None:
        """The session's stream is over: what it never sent goes back to the ready queue."""
        self._reclaim(session.close())
        if self._sessions.get(session.dispatcher_id) is session:
            del self._sessions[session.dispatcher_id]
            held = self._leases.held_by(session.dispatcher_id)
            log.info("dispatcher %s disconnected; its %d leases wait %g s for it to reconnect",
                     session.dispatcher_id, held, self._settings.reconnect_grace_s)  # fmt: skip
            if held:
                when = self._clock.now_ms() + int(self._settings.reconnect_grace_s * 1000)
                self._clock.call_at(when, lambda: self._after_grace(session.dispatcher_id))

    def _after_grace(self, dispatcher_id: str) -> None:
        """The grace after a dropped stream is over: unless the dispatcher is back, its leases
        go back to the ready queue."""
        if dispatcher_id in self._sessions or self._stopping.is_set():
            return
        leases = [lease for lease in self._leases.all() if lease.dispatcher_id == dispatcher_id]
        if leases:
            log.warning("dispatcher %s did not come back within %g s: its %d leases go back to the ready queue",
                        dispatcher_id, self._settings.reconnect_grace_s, len(leases))  # fmt: skip
        self._reclaim(leases)

    def end_session(self, dispatcher_id: str) -> bool:
        """Ends a dispatcher's stream from this side; its leases run on (it reconnects and
        reports them). False if it is not connected."""
        session = self._sessions.get(dispatcher_id)
        if session is None:
            return False
        self.disconnect(session)
        return True

    def _reclaim(self, unsent) -> None:
        for lease in unsent:
            if self._leases.get(lease.lease_id) is None:
                continue
            self._end_lease(lease)
            n = lease.notify
            if self._current(n, lease.version):
                self._held.move(n, State.PENDING, n.due_ms)
                self._ready.offer(n)
        self._pump()

    def drain_dispatchers(self, dispatcher_id: str = "") -> list[str]:
        """Tells one connected dispatcher (every one for "") to take no more work from here;
        its calls in flight finish and are reported. Returns the ids told."""
        told = [s for s in self._sessions.values() if not dispatcher_id or s.dispatcher_id == dispatcher_id]
        for s in told:
            log.info("dispatcher %s: drain asked by an operator", s.dispatcher_id)
            self._drained.add(s.dispatcher_id)
            self.set_draining(s)
            s.send(Drain())
        return [s.dispatcher_id for s in told]

    def set_draining(self, session: Session) -> None:
        session.credit = 0
        session.capacity = 0
        session.draining = True
        log.info("dispatcher %s is draining; no more grants to it", session.dispatcher_id)

    def add_credit(self, session: Session, credit: int) -> None:
        if credit > 0:
            session.credit = min(session.capacity, session.credit + credit)
            self._pump()

    def extend(self, session: Session, lease_id: str, by_s: float) -> None:
        lease = self._leases.get(lease_id)
        if lease is None or lease.dispatcher_id != session.dispatcher_id:
            return
        now = self._clock.now_ms()
        lease.deadline_ms = max(lease.deadline_ms, now + int(min(by_s, MAX_EXTEND_S) * 1000))
        self._schedule_lease(lease)
