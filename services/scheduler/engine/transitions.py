"""A notify's states and the moves between them, for the engine, the stores and the counts.

The store holds the state of the last commit. Two moves are made in memory
only and never written: becoming due (-> PENDING) and being leased
(-> DELIVERING; back to PENDING if the grant never left). `Held` tracks,
for the notifies in memory, where memory and store differ, so status counts
are the store's counts plus that difference.
"""

from __future__ import annotations

import logging
from collections import Counter

from .model import Notification, State

log = logging.getLogger(__name__)
S = State
UNFINISHED = (S.SCHEDULED, S.WAITING_TRIGGER, S.PENDING, S.DELIVERING, S.RETRY_WAIT)
UPDATABLE_STATES = (S.SCHEDULED, S.WAITING_TRIGGER, S.PENDING, S.RETRY_WAIT)
ACTIVE = (S.SCHEDULED, S.PENDING, S.RETRY_WAIT)  # held in memory when due within the horizon
RETRYABLE = (S.FAILED, S.CANCELLED)  # what RetryNotify starts again

# Every move a notify can make. In memory: due, grant, reclaim, result, expiry, cancel.
# In the store alone (the operations): trigger, update, retry.
MOVES: dict[State, frozenset[State]] = {
    S.SCHEDULED: frozenset({S.PENDING, S.SCHEDULED, S.WAITING_TRIGGER, S.CANCELLED}),
    S.WAITING_TRIGGER: frozenset({S.PENDING, S.SCHEDULED, S.WAITING_TRIGGER, S.CANCELLED}),
    S.PENDING: frozenset({S.PENDING, S.DELIVERING, S.SCHEDULED, S.WAITING_TRIGGER, S.FAILED, S.CANCELLED}),
    S.DELIVERING: frozenset({S.PENDING, S.RETRY_WAIT, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.RETRY_WAIT: frozenset({S.PENDING, S.SCHEDULED, S.WAITING_TRIGGER, S.FAILED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset({S.PENDING}),
    S.CANCELLED: frozenset({S.PENDING}),
}


def allowed(old: State, new: State) -> bool:
    return new in MOVES[old]


class Held:
    """The engine's record of the notifies it holds: a version per change, and where
    memory is ahead of the store.

    Every change of a held notify's state or due time goes through move(), which gives
    it a new version; so do taking it into memory and letting it go. Whatever refers
    to a notify (a wheel or ready-queue entry, a lease, a commit in flight) holds the
    notify and the version it saw, and checks it before acting: a different version
    means the notify moved on meanwhile. Versions count per notify copy (small ints)."""

    def __init__(self) -> None:
        self._stored: dict[str, State] = {}  # notifies whose memory state the store does not hold
        self._delta: Counter[tuple[str, State]] = Counter()

    def take(self, n: Notification) -> None:
        """n comes into memory as committed (the store holds its state)."""
        self._forget_difference(n)
        n.version += 1

    def move(self, n: Notification, state: State, due_ms: int | None) -> None:
        if not allowed(n.state, state):  # a bug: said loudly (the tests fail on it), and made all the same
            log.error("notify %s moved from %s to %s, a move transitions.MOVES does not list", n.id, n.state.name, state.name)
        stored = self._stored.pop(n.id, n.state)
        self._count(n.spec.queue, n.state, stored, -1)
        n.state, n.due_ms = state, due_ms
        n.version += 1
        if state != stored:
            self._stored[n.id] = stored
            self._count(n.spec.queue, state, stored, +1)

    def committed(self, n: Notification) -> None:
        """The store now holds n's state."""
        self._forget_difference(n)

    def release(self, n: Notification) -> None:
        """n leaves memory; references to it go stale."""
        self._forget_difference(n)
        n.version += 1

    def counts(self, stored: dict[tuple[str, State], int]) -> dict[tuple[str, State], int]:
        """The store's counts by (queue, state) with memory's moves applied."""
        out = Counter(stored)
        out.update(self._delta)
        return {k: v for k, v in out.items() if v > 0}

    def _forget_difference(self, n: Notification) -> None:
        stored = self._stored.pop(n.id, None)
        if stored is not None:
            self._count(n.spec.queue, n.state, stored, -1)

    def _count(self, queue: str, state: State, stored: State, sign: int) -> None:
        if state != stored:
            self._delta[(queue, state)] += sign
            self._delta[(queue, stored)] -= sign
