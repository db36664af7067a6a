"""The Store port: where notifies live durably. SqliteStore and PostgresStore are its adapters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

from ..engine.errors import Fenced  # noqa: F401  (a fenced write's error)
from ..engine.model import QUEUE_FIELDS, AttemptRecord, GroupStatus, ListFilter, NewGroup, Notification, QueueConfig, Spec, State
from ..engine.transitions import ACTIVE  # noqa: F401  (states the loader reads by due time)

GroupCallback = Callable[[GroupStatus], Notification]
"""Builds the notify that POSTs a finished group's counts to its callback_url. Writes that can
end a group's last member take one: when that member ends, the store commits the notify it
builds in the same transaction and marks the group's callback as done, so it is made once."""


def queue_columns(fields: Iterable[str]) -> str:
    """The SET list of an upsert of queue settings that writes only `fields` (of QUEUE_FIELDS)."""
    given = set(fields)
    names = [f for f in QUEUE_FIELDS if f in given]
    if not names:
        raise ValueError(f"no queue setting among {sorted(given)}")
    return ", ".join(f"{f} = EXCLUDED.{f}" for f in names)


@dataclass(slots=True)  # not frozen: one is made per result, and frozen construction costs 4x; nothing changes one
class ResultWrite:
    """An attempt's outcome to persist: the notify's new fields and the attempt record."""

    notify: Notification
    attempt: AttemptRecord | None
    follow_up: Notification | None = None  # a new notify (the result callback) committed with it
    reason: str = ""  # why the notify is where it is now (for logs and observers; not stored)


class Store(Protocol):
    """Writes of notifies in a fenced store (PostgreSQL with an Ownership) fail with Fenced, and
    commit nothing, unless this scheduler holds their partitions at its epoch in the same
    transaction."""

    partitions: int
    """P, fixed when the store is created: open() refuses a different one (ConfigError)."""

    healthy: bool  # False from a failed commit until one succeeds again

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def probe(self) -> bool:
        """Tries a small commit; True when the store can commit again."""
        ...

    async def insert(self, items: list[Notification], *, group: NewGroup | None = None) -> list[Notification]:
        """Commits items; for a request_id seen before, returns the first notify instead.
        A group with a callback_url keeps the first one it is given: another one is
        FailedPrecondition and commits nothing."""
        ...

    async def insert_new(self, rows: list[tuple], *, group: NewGroup | None = None) -> list[Notification | None]:
        """insert() for notifies the create path made without a Notification: codec.new_row rows,
        whose spec the store encodes once. For each row, None when it was inserted, or the first
        notify with its request_id."""
        ...

    async def save_results(self, writes: list[ResultWrite], *, group_callback: GroupCallback | None = None) -> list[Notification]:
        """Commits new states and appends attempts, in one transaction; returns the group
        callbacks committed with them (see GroupCallback)."""
        ...

    async def transition(
        self, notify_id: str, *, allowed: tuple[State, ...], state: State, due_ms: int | None,
        complete_ms: int | None, reset_budget: bool = False, group_callback: GroupCallback | None = None,
    ) -> tuple[bool, Notification | None, list[Notification]]:
        """Moves a notify to state if it is in one of `allowed`; returns (changed, current,
        the group callbacks committed with it)."""
        ...  # fmt: skip

    async def cancel_group(
        self, group_key: str, *, complete_ms: int, group_callback: GroupCallback | None = None,
        partitions: frozenset[int] | None = None,
    ) -> tuple[list[tuple[str, str]], list[Notification]]:
        """Cancels every unfinished member of a group (in `partitions`, when given); returns their
        (id, ordering_key) and the group callbacks committed with them."""
        ...

    async def group(self, group_key: str) -> GroupStatus | None:
        """A group's members by state and its callback; None when it has neither."""
        ...

    async def update(
        self, notify_id: str, *, allowed: tuple[State, ...], spec: Spec, state: State, due_ms: int | None
    ) -> tuple[bool, Notification | None]:
        """Replaces the spec (and state, due) of a notify in one of `allowed`; returns (changed, current)."""
        ...

    async def trigger(
        self, trigger_key: str, *, state: State, due_ms: int, partitions: frozenset[int] | None = None
    ) -> list[Notification]:
        """Moves every notify waiting on trigger_key (in `partitions`, when given) to state/due_ms;
        returns them."""
        ...

    async def get(self, notify_id: str) -> Notification | None:
        """The notify with its attempts, or None."""
        ...

    async def load_due(
        self, *, after: tuple[int, str], until_ms: int, limit: int, partitions: frozenset[int] | None = None
    ) -> list[Notification]:
        """Active notifies with (due_ms, id) > after and due_ms < until_ms (in `partitions`, when
        given), in due order."""
        ...

    async def blocked_heads(self, partitions: frozenset[int] | None = None) -> list[tuple[str, str]]:
        """(ordering_key, id) of notifies (in `partitions`, when given) that hold their key while
        waiting to retry."""
        ...

    async def counts(self) -> dict[tuple[str, State], int]:
        """Notifies by (queue, state)."""
        ...

    async def save_queue(self, q: QueueConfig, fields: Iterable[str] = QUEUE_FIELDS) -> QueueConfig:
        """Persists the named settings of a queue (QUEUE_FIELDS; a new queue gets all of q's) and
        returns the queue as stored: two schedulers changing different settings of one queue at
        once keep both changes."""
        ...

    async def load_queues(self) -> list[QueueConfig]:
        """Every queue with persisted settings, by name."""
        ...

    async def list(self, f: ListFilter, *, after_id: str, limit: int) -> list[Notification]: ...
