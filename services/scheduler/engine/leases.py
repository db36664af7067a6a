"""Leases: who is making which call, until when."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

from .model import Notification


@dataclass(slots=True, eq=False)
class Lease:
    lease_id: str
    notify: Notification
    dispatcher_id: str
    attempt: int
    granted_ms: int
    deadline_ms: int
    version: int = 0  # the notify's version once leased: if it differs, a result or expiry is in already
    partition: int = 0  # the notify's partition and the epoch this scheduler held it under when
    epoch: int = 0  # granting: a result for an epoch no longer held is refused


class LeaseBook:
    """Live leases by id and by notify; a notify has at most one lease at a time."""

    def __init__(self) -> None:
        self._by_id: dict[str, Lease] = {}
        self._by_notify: dict[str, Lease] = {}
        self._prefix = os.urandom(4).hex()
        self._seq = itertools.count(1)
        self._per_queue: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def grant(self, n: Notification, dispatcher_id: str, *, now_ms: int, deadline_ms: int) -> Lease:
        if n.id in self._by_notify:
            raise RuntimeError(f"notify {n.id} is already leased")
        lease = Lease(f"{self._prefix}-{next(self._seq)}", n, dispatcher_id, n.attempt_count + 1, now_ms, deadline_ms)
        self._by_id[lease.lease_id] = lease
        self._by_notify[n.id] = lease
        self._per_queue[n.spec.queue] = self._per_queue.get(n.spec.queue, 0) + 1
        return lease

    def get(self, lease_id: str) -> Lease | None:
        return self._by_id.get(lease_id)

    def for_notify(self, notify_id: str) -> Lease | None:
        return self._by_notify.get(notify_id)

    def end(self, lease: Lease) -> None:
        if self._by_id.pop(lease.lease_id, None) is None:
            return
        mine = self._by_notify.get(lease.notify.id)
        if mine is not None and mine.lease_id == lease.lease_id:
            del self._by_notify[lease.notify.id]
        self._per_queue[lease.notify.spec.queue] -= 1

    def all(self) -> list[Lease]:
        return list(self._by_id.values())

    def held_by(self, dispatcher_id: str) -> int:
        return sum(1 for lease in self._by_id.values() if lease.dispatcher_id == dispatcher_id)

    def by_dispatcher(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for lease in self._by_id.values():
            out[lease.dispatcher_id] = out.get(lease.dispatcher_id, 0) + 1
        return out

    def in_flight(self, queue: str) -> int:
        return self._per_queue.get(queue, 0)

    def by_queue(self) -> dict[str, int]:
        return {q: n for q, n in self._per_queue.items() if n}
