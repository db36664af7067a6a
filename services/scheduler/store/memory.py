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
from collections.abc import Iterable

from . import codec
from ...common.config import ConfigError
from ...common.ids import partition_of
from ..engine.errors import FailedPrecondition, Unavailable
from ..engine.ownership import DEFAULT_PARTITIONS, check_partitions
from ..engine.model import NO_ATTEMPTS, QUEUE_FIELDS, GroupStatus, ListFilter, NewGroup, Notification, QueueConfig, Spec, State
from ..engine.transitions import ACTIVE
from .port import GroupCallback, ResultWrite


@dataclasses.dataclass
class MemoryData:
    notifies: dict[str, Notification] = dataclasses.field(default_factory=dict)
    by_request: dict[str, str] = dataclasses.field(default_factory=dict)
    queues: dict[str, QueueConfig] = dataclasses.field(default_factory=dict)
    # group key -> [callback_url, callback_ms, callback_id], as the groups table holds them
    groups: dict[str, list] = dataclasses.field(default_factory=dict)
    partitions: int = 0  # fixed by the first store opened on it


def _copy(n: Notification, *, attempts: bool = False) -> Notification:
    # A stored row owns its list (save_results appends to it); a read without any gets NO_ATTEMPTS.
    return dataclasses.replace(n, attempts=list(n.attempts) if attempts else NO_ATTEMPTS, version=0)


class MemoryStore:
    def __init__(self, data: MemoryData | None = None, *, partitions: int = DEFAULT_PARTITIONS) -> None:
        self.partitions = check_partitions(partitions)
        self._data = data if data is not None else MemoryData()
        self._closed = False

    async def open(self) -> None:
        self._data.partitions = self._data.partitions or self.partitions
        if self._data.partitions != self.partitions:
            raise ConfigError(f"NOTIFY_PARTITIONS is {self.partitions} but this memory store was created with"
                              f" {self._data.partitions}; partitions are fixed when a store is created")  # fmt: skip

    def _in(self, notify_id: str, partitions: frozenset[int] | None) -> bool:
        return partitions is None or partition_of(notify_id, self.partitions) in partitions

    async def close(self) -> None:
        self._closed = True

    def _rows(self) -> dict[str, Notification]:
        if self._closed:
            raise Unavailable("store is closed")
        return self._data.notifies

    async def insert(self, items: list[Notification], *, group: NewGroup | None = None) -> list[Notification]:
        rows, by_request = self._rows(), self._data.by_request
        if group is not None:
            known = self._data.groups.get(group.key)
            if known is not None and known[0] != group.callback_url:
                raise FailedPrecondition(f"group {group.key!r} already has the callback_url {known[0]!r}; a group keeps its first")
            self._data.groups.setdefault(group.key, [group.callback_url, None, ""])
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

    async def insert_new(self, rows: list[tuple], *, group: NewGroup | None = None) -> list[Notification | None]:
        items = [Notification(id=r[0], spec=codec.spec_from_message(r[12], trigger_key=r[5], ordering_key=r[4], queue=r[3],
                                                                    group_key=r[13]),
                              state=State(r[2]), create_ms=r[7], request_id=r[1], due_ms=r[6]) for r in rows]  # fmt: skip
        return [None if got is n else got for n, got in zip(items, await self.insert(items, group=group))]

    async def save_results(self, writes: list[ResultWrite], *, group_callback: GroupCallback | None = None) -> list[Notification]:
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
        return self._end_groups(codec.ended_groups(writes), group_callback)

    async def transition(
        self, notify_id: str, *, allowed: tuple[State, ...], state: State, due_ms: int | None,
        complete_ms: int | None, reset_budget: bool = False, group_callback: GroupCallback | None = None,
    ) -> tuple[bool, Notification | None, list[Notification]]:  # fmt: skip
        row = self._rows().get(notify_id)
        if row is None:
            return False, None, []
        if row.state not in allowed:
            return False, _copy(row), []
        if reset_budget:
            row.budget_base, row.first_attempt_ms = row.attempt_count, None
        row.state, row.due_ms, row.complete_ms = state, due_ms, complete_ms
        ended = [row.spec.group_key] if row.spec.group_key and state.terminal else []
        return True, _copy(row), self._end_groups(ended, group_callback)

    async def cancel_group(
        self, group_key: str, *, complete_ms: int, group_callback: GroupCallback | None = None,
        partitions: frozenset[int] | None = None,
    ) -> tuple[list[tuple[str, str]], list[Notification]]:  # fmt: skip
        cancelled = []
        for n_id in sorted(self._rows()):
            row = self._data.notifies[n_id]
            if row.spec.group_key == group_key and not row.state.terminal and self._in(n_id, partitions):
                row.state, row.due_ms, row.complete_ms = State.CANCELLED, None, complete_ms
                cancelled.append((row.id, row.spec.ordering_key))
        return cancelled, self._end_groups([group_key] if cancelled else [], group_callback)

    async def group(self, group_key: str) -> GroupStatus | None:
        return self._group(group_key)

    def _group(self, key: str) -> GroupStatus | None:
        members = [n for n in self._rows().values() if key and n.spec.group_key == key]
        by_state = Counter(n.state for n in members)
        counts = [(s, c, max((n.complete_ms for n in members if n.state == s and n.complete_ms is not None), default=None))
                  for s, c in by_state.items()]  # fmt: skip
        return codec.group_status(key, counts, self._data.groups.get(key))

    def _end_groups(self, keys: list[str], make: GroupCallback | None) -> list[Notification]:
        """The callback of each group in keys whose last member has just ended, made once."""
        made = []
        for key in keys if make else ():
            cb = self._data.groups.get(key)
            if cb is None or not cb[0] or cb[1] is not None:
                continue
            g = self._group(key)
            if not g.done:
                continue
            n = make(g)
            self._data.notifies[n.id] = _copy(n, attempts=True)
            cb[1], cb[2] = n.create_ms, n.id
            made.append(n)
        return made

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

    async def trigger(
        self, trigger_key: str, *, state: State, due_ms: int, partitions: frozenset[int] | None = None
    ) -> list[Notification]:
        out = []
        for n_id in sorted(self._rows()):
            row = self._data.notifies[n_id]
            if row.spec.trigger_key == trigger_key and row.state == State.WAITING_TRIGGER and self._in(n_id, partitions):
                row.state, row.due_ms = state, due_ms
                out.append(_copy(row))
        return out

    async def get(self, notify_id: str) -> Notification | None:
        row = self._rows().get(notify_id)
        return None if row is None else _copy(row, attempts=bool(row.attempts))

    async def load_due(
        self, *, after: tuple[int, str], until_ms: int, limit: int, partitions: frozenset[int] | None = None
    ) -> list[Notification]:
        due = sorted(
            (n.due_ms, n.id) for n in self._rows().values()
            if n.state in ACTIVE and n.due_ms is not None and (n.due_ms, n.id) > after and n.due_ms < until_ms
            and self._in(n.id, partitions)
        )  # fmt: skip
        return [_copy(self._data.notifies[i]) for _, i in due[:limit]]

    async def blocked_heads(self, partitions: frozenset[int] | None = None) -> list[tuple[str, str]]:
        return [(n.spec.ordering_key, n.id) for n in self._rows().values()
                if n.state == State.RETRY_WAIT and n.spec.ordering_key and self._in(n.id, partitions)]  # fmt: skip

    async def counts(self) -> dict[tuple[str, State], int]:
        return dict(Counter((n.spec.queue, n.state) for n in self._rows().values()))

    async def save_queue(self, q: QueueConfig, fields: Iterable[str] = QUEUE_FIELDS) -> QueueConfig:
        self._rows()
        old = self._data.queues.get(q.name)
        stored = self._data.queues[q.name] = q if old is None else dataclasses.replace(old, **{f: getattr(q, f) for f in fields})
        return stored

    async def load_queues(self) -> list[QueueConfig]:
        self._rows()
        return [self._data.queues[name] for name in sorted(self._data.queues)]

    async def list(self, f: ListFilter, *, after_id: str, limit: int) -> list[Notification]:
        out = []
        for n_id in sorted(i for i in self._rows() if i > after_id):
            n = self._data.notifies[n_id]
            if ((f.state is None or n.state == f.state) and (not f.queue or n.spec.queue == f.queue)
                    and (not f.trigger_key or n.spec.trigger_key == f.trigger_key)
                    and (not f.ordering_key or n.spec.ordering_key == f.ordering_key)
                    and (not f.group_key or n.spec.group_key == f.group_key) and _labelled(n, f)):  # fmt: skip
                out.append(_copy(n))
                if len(out) == limit:
                    break
        return out


def _labelled(n: Notification, f: ListFilter) -> bool:
    if not f.label_key:
        return True
    value = n.spec.labels.get(f.label_key)
    return value is not None and (f.label_value is None or value == f.label_value)
