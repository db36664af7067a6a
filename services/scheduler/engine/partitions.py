"""Partitions: the engine acts only for the partitions its Fence holds.

Taking a partition loads its due work and its blocked ordering keys at once;
giving one up drops everything of it from memory (its leases end without a
word to the dispatcher: its new owner delivers it again, and the store refuses
this scheduler's writes for it). New notifies get a partition: their ordering
key's, or one this scheduler holds, in turn."""

from __future__ import annotations

import logging

from .errors import NotOwner
from .memory import Memory

log = logging.getLogger(__name__)


class Partitions(Memory):
    def partition_for(self, ordering_key: str) -> int:
        """The partition a new notify goes to; NotOwner when it is not one held here."""
        if ordering_key:
            p = self._fence.for_key(ordering_key)
            if not self._fence.holds(p):
                raise NotOwner(p)
            return p
        held = sorted(self._fence.held())
        if not held:
            raise NotOwner(-1)  # any owner will do
        self._next_part = (self._next_part + 1) % len(held)
        return held[self._next_part]

    def require_owner(self, notify_id: str) -> None:
        """NotOwner unless this scheduler holds the notify's partition."""
        p = self._fence.of(notify_id)
        if not self._fence.holds(p):
            raise NotOwner(p)

    def held_partitions(self) -> frozenset[int] | None:
        """The partitions held here; None when that is every one (no filter needed)."""
        held = self._fence.held()
        return None if len(held) == self._fence.partitions else frozenset(held)

    def partitions_held(self) -> list[int]:
        """The partitions held now, ascending (for status)."""
        return sorted(self._fence.held())

    def take_partitions(self, gained: set[int]) -> None:
        """Ownership gained these: their due work comes into memory now."""
        self._spawn(self._load_partitions(frozenset(gained)))

    def give_up_partitions(self, lost: set[int]) -> None:
        """Ownership lost these: nothing of them stays in memory."""
        of = self._fence.of
        dropped = 0
        for n in [n for n in self._live.values() if of(n.id) in lost]:
            lease = self._leases.for_notify(n.id)
            if lease is not None:
                self._end_lease(lease)
            self._drop(n.id)
            dropped += 1
        self._ready.drop_keys(lambda key: self._fence.for_key(key) in lost)
        if dropped:
            log.info("partitions %s given up: %d notifies left memory", sorted(lost), dropped)
        self._pump()

    async def _load_partitions(self, parts: frozenset[int]) -> None:
        async with self._loading:
            for key, notify_id in await self._store.blocked_heads(partitions=parts):
                if self._fence.holds(self._fence.of(notify_id)):
                    self._ready.hold(key, notify_id)
            until = max(self._cursor[0], self._clock.now_ms() + int(self._settings.horizon_s * 1000))
            loaded = await self._load_range(until, parts, after=(-1, ""))
        log.info("partitions %s taken: %d due notifies loaded", sorted(parts), loaded)
