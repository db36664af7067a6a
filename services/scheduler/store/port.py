"""The Store port: where notifies live durably. SqliteStore and PostgresStore are its adapters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..engine.model import AttemptRecord, ListFilter, Notification, QueueConfig, Spec, State

ACTIVE = (State.SCHEDULED, State.PENDING, State.RETRY_WAIT)  # states the timer loads by due time


@dataclass(frozen=True, slots=True)
class ResultWrite:
    """An attempt's outcome to persist: the notify's new fields and the attempt record."""

    notify: Notification
    attempt: AttemptRecord | None
    follow_up: Notification | None = None  # a new notify (the result callback) committed with it


class Store(Protocol):
    healthy: bool  # False from a failed commit until one succeeds again

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def probe(self) -> bool:
        """Tries a small commit; True when the store can commit again."""
        ...

    async def insert(self, items: list[Notification]) -> list[Notification]:
        """Commits items; for a request_id seen before, returns the first notify instead."""
        ...

    async def save_results(self, writes: list[ResultWrite]) -> None:
        """Commits new states and appends attempts, in one transaction."""
        ...

    async def transition(
        self, notify_id: str, *, allowed: tuple[State, ...], state: State, due_ms: int | None,
        complete_ms: int | None, reset_budget: bool = False,
    ) -> tuple[bool, Notification | None]:
        """Moves a notify to state if it is in one of `allowed`; returns (changed, current)."""
        ...  # fmt: skip

    async def update(
        self, notify_id: str, *, allowed: tuple[State, ...], spec: Spec, state: State, due_ms: int | None
    ) -> tuple[bool, Notification | None]:
        """Replaces the spec (and state, due) of a notify in one of `allowed`; returns (changed, current)."""
        ...

    async def trigger(self, trigger_key: str, *, state: State, due_ms: int) -> list[Notification]:
        """Moves every notify waiting on trigger_key to state/due_ms; returns them."""
        ...

    async def get(self, notify_id: str) -> Notification | None:
        """The notify with its attempts, or None."""
        ...

    async def load_due(self, *, after: tuple[int, str], until_ms: int, limit: int) -> list[Notification]:
        """Active notifies with (due_ms, id) > after and due_ms < until_ms, in due order."""
        ...

    async def blocked_heads(self) -> list[tuple[str, str]]:
        """(ordering_key, id) of notifies that hold their key while waiting to retry."""
        ...

    async def counts(self) -> dict[tuple[str, State], int]:
        """Notifies by (queue, state)."""
        ...

    async def save_queue(self, q: QueueConfig) -> None:
        """Persists a queue's limits and pause state (replacing what was there)."""
        ...

    async def load_queues(self) -> list[QueueConfig]:
        """Every queue with persisted settings, by name."""
        ...

    async def list(self, f: ListFilter, *, after_id: str, limit: int) -> list[Notification]: ...
