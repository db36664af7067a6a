"""MemoryStore: the Store port in memory, for tests of the engine on a fake clock.

It keeps the contract the SQLite and PostgreSQL adapters keep (the one contract
suite runs over all three) without threads, files or a server. `MemoryData`
is its backing: stores opened on the same data see each other's writes, as
stores on one file do, and it outlives close(). Not for production: nothing
survives the process.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from ..engine.errors import Unavailable
from ..engine.model import ListFilter, Notification, QueueConfig, Spec, State
from ..engine.transitions import ACTIVE
from .port import ResultWrite


@dataclasses.dataclass
class MemoryData:
    notifies: dict[str, Notification] = dataclasses.field(default_factory=dict)
    by_request: dict[str, str] = dataclasses.field(default_factory=dict)
    queues: dict[str, QueueConfig] = dataclasses.field(default_factory=dict)


def _copy(n: Notification, *, attempts: bool = False) -> Notification:
    return dataclasses.replace(n, attempts=list(n.attempts) if attempts else [], version=0)


class MemoryStore:
    def __init__(self, data: MemoryData | None = None) -> None:
        self._data = data if data is not None else MemoryData()
        self._closed = False

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        self._closed = True

    def _rows(self) -> dict[str, Notification]:
        if self._closed:
            raise Unavailable("store is closed")
        return self._data.notifies

    async def insert(self, items: list[Notification]) -> list[Notification]:
        rows, by_request = self._rows(), self._data.by_request
        requests, new_ids = set(by_request), set()
        for n in items:  # all or nothing: check first
            if n.request_id and n.request_id in requests:
                continue
            if n.id in rows or n.id in new_ids:
                raise ValueError(f"notify id {n.id} is taken")
            new_ids.add(n.id)
            if n.request_id:
                requests.add(n.request_id)
        out = []
        for n in items:
            first = by_request.get(n.request_id) if n.request_id else None
            if first is not None:
                out.append(_copy(rows[first]))
                continue
            rows[n.id] = _copy(n, attempts=True)
            if n.request_id:
                by_request[n.request_id] = n.id
            out.append(n)
        return out

    async def save_results(self, writes: list[ResultWrite]) -> None:
        rows = self._rows()
        for w in writes:
            n, row = w.notify, rows.get(w.notify.id)
            if row is not None and row.state != State.CANCELLED:
                row.state, row.due_ms, row.complete_ms = n.state, n.due_ms, n.complete_ms
                row.attempt_count, row.first_attempt_ms = n.attempt_count, n.first_attempt_ms
            if row is not None and w.attempt is not None:
                row.attempts.append(w.attempt)
                row.attempts.sort(key=lambda a: a.number)
            if w.follow_up is not None:
                rows[w.follow_up.id] = _copy(w.follow_up, attempts=True)

    async def transition(
        self, notify_id: str, *, allowed: tuple[State, ...], state: State, due_ms: int | None,
        complete_ms: int | None, reset_budget: bool = False,
    ) -> tuple[bool, Notification | None]:  # fmt: skip
        row = self._rows().get(notify_id)
        if row is None:
            return False, None
        if row.state not in allowed:
            return False, _copy(row)
        if reset_budget:
            row.budget_base, row.first_attempt_ms = row.attempt_count, None
        row.state, row.due_ms, row.complete_ms = state, due_ms, complete_ms
        return True, _copy(row)

    async def update(
        self, notify_id: str, *, allowed: tuple[State, ...], spec: Spec, state: State, due_ms: int | None
    ) -> tuple[bool, Notification | None]:
        row = self._rows().get(notify_id)
        if row is None:
            return False, None
        if row.state not in allowed:
            return False, _copy(row)
        row.spec, row.state, row.due_ms = spec, state, due_ms
        return True, _copy(row)

    async def trigger(self, trigger_key: str, *, state: State, due_ms: int) -> list[Notification]:
        out = []
        for n_id in sorted(self._rows()):
            row = self._data.notifies[n_id]
            if row.spec.trigger_key == trigger_key and row.state == State.WAITING_TRIGGER:
                row.state, row.due_ms = state, due_ms
                out.append(_copy(row))
        return out

    async def get(self, notify_id: str) -> Notification | None:
        row = self._rows().get(notify_id)
        return None if row is None else _copy(row, attempts=True)

    async def load_due(self, *, after: tuple[int, str], until_ms: int, limit: int) -> list[Notification]:
        due = sorted(
            (n.due_ms, n.id) for n in self._rows().values()
            if n.state in ACTIVE and n.due_ms is not None and (n.due_ms, n.id) > after and n.due_ms < until_ms
        )  # fmt: skip
        return [_copy(self._data.notifies[i]) for _, i in due[:limit]]

    async def blocked_heads(self) -> list[tuple[str, str]]:
        return [(n.spec.ordering_key, n.id) for n in self._rows().values()
                if n.state == State.RETRY_WAIT and n.spec.ordering_key]  # fmt: skip

    async def counts(self) -> dict[tuple[str, State], int]:
        return dict(Counter((n.spec.queue, n.state) for n in self._rows().values()))

    async def save_queue(self, q: QueueConfig) -> None:
        self._rows()
        self._data.queues[q.name] = q

    async def load_queues(self) -> list[QueueConfig]:
        self._rows()
        return [self._data.queues[name] for name in sorted(self._data.queues)]

    async def list(self, f: ListFilter, *, after_id: str, limit: int) -> list[Notification]:
        out = []
        for n_id in sorted(i for i in self._rows() if i > after_id):
            n = self._data.notifies[n_id]
            if ((f.state is None or n.state == f.state) and (not f.queue or n.spec.queue == f.queue)
                    and (not f.trigger_key or n.spec.trigger_key == f.trigger_key)
                    and (not f.ordering_key or n.spec.ordering_key == f.ordering_key)):  # fmt: skip
                out.append(_copy(n))
                if len(out) == limit:
                    break
        return out
