"""Partitions and who may act for them: the Fence this process checks before it acts.

The store is divided into P partitions (fixed when the store is created). A
scheduler acts only for partitions it owns, at the epoch it owns them under,
and only until its ownership could have expired: `valid_until` is the start of
the last successful renewal plus the TTL minus a margin, on the monotonic
clock the ownership passes in (a paused process wakes up past it and acts for
nothing). The store
checks the epoch again in every write transaction; this local fence is what
stops a process before it even tries (granting, results).

SoleOwnership is the single-process case (SQLite, memory): every partition at
epoch 1, for ever.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from ...common.ids import MAX_PARTITIONS, partition_for_key, partition_of

DEFAULT_PARTITIONS = 16
FOREVER = float("inf")

OnChange = Callable[[set[int], set[int]], None]
"""Called with (gained, lost) partitions; lost ones are already out of the fence. Returns at once."""


def check_partitions(p: int, setting: str = "NOTIFY_PARTITIONS") -> int:
    if not 1 <= p <= MAX_PARTITIONS:
        raise ValueError(f"{setting} must be between 1 and {MAX_PARTITIONS}, not {p}")
    return p


class Fence:
    """Partition -> (epoch, valid until on the monotonic clock). One owner: the ownership loop."""

    def __init__(self, partitions: int, *, monotonic: Callable[[], float]) -> None:
        self.partitions = check_partitions(partitions)
        self._now = monotonic
        self._held: dict[int, tuple[int, float]] = {}
        self._sorted: tuple[int, ...] | None = None  # held_sorted(), until set/drop or its first expiry
        self._sorted_until = 0.0

    def epoch(self, partition: int) -> int | None:
        """The epoch this process holds the partition under, or None (not held, or maybe expired)."""
        got = self._held.get(partition)
        if got is None or self._now() >= got[1]:
            return None
        return got[0]

    def holds(self, partition: int) -> bool:
        return self.epoch(partition) is not None

    def held(self) -> dict[int, int]:
        """Every partition held now, with its epoch."""
        now = self._now()
        return {p: e for p, (e, until) in self._held.items() if now < until}

    def held_sorted(self) -> tuple[int, ...]:
        """held()'s partitions ascending; cached until the fence changes or one of them expires."""
        now = self._now()
        if self._sorted is None or now >= self._sorted_until:
            live = [(p, until) for p, (_, until) in self._held.items() if now < until]
            self._sorted = tuple(sorted(p for p, _ in live))
            self._sorted_until = min((until for _, until in live), default=math.inf)
        return self._sorted

    def recorded(self) -> dict[int, int]:
        """What the fence remembers, expired or not (what the next renewal tries to keep)."""
        return {p: e for p, (e, _) in self._held.items()}

    def set(self, partition: int, epoch: int, valid_until: float) -> None:
        self._held[partition] = (epoch, valid_until)
        self._sorted = None

    def drop(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._held.pop(p, None)
        self._sorted = None

    def of(self, notify_id: str) -> int:
        return partition_of(notify_id, self.partitions)

    def for_key(self, ordering_key: str) -> int:
        return partition_for_key(ordering_key, self.partitions)


@dataclass(frozen=True, slots=True)
class Member:
    """A live scheduler: its owner id and the address peers forward to."""

    owner: str
    address: str


class Ownership(Protocol):
    """Takes, renews, balances and releases partitions; keeps the Fence current."""

    owner_id: str
    fence: Fence
    address: str  # where peers reach this scheduler (set before start)

    async def start(self, on_change: OnChange) -> None: ...
    async def stop(self) -> None: ...
    async def refresh(self) -> None: ...  # reads owners and members again, between renewals
    def owner_of(self, partition: int) -> Member | None: ...
    def members(self) -> list[Member]: ...


class SoleOwnership:
    """One process owns every partition (SQLite's exclusive file, the in-memory store)."""

    def __init__(self, partitions: int, *, owner_id: str = "sole", address: str = "") -> None:
        self.owner_id = owner_id
        self.fence = Fence(partitions, monotonic=lambda: 0.0)  # held for ever: the time never matters
        self.address = address
        for p in range(partitions):
            self.fence.set(p, 1, FOREVER)

    async def start(self, on_change: OnChange) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def refresh(self) -> None:
        pass

    def owner_of(self, partition: int) -> Member | None:
        return Member(self.owner_id, self.address)


    def members(self) -> list[Member]:
        return [Member(self.owner_id, self.address)]
