"""PostgresOwnership: schedulers sharing one PostgreSQL store take, renew, balance and release
its partitions through the partition_owners table, with the database's clock.

Every tick (a quarter of the TTL) runs one transaction: this scheduler's row in
scheduler_members is renewed; the partitions it holds are renewed, each only at
the exact (owner, epoch) it holds and only while unexpired; the live members are
read; if it holds less than its share it takes orphans (unowned or expired rows)
by bumping their epoch under FOR UPDATE SKIP LOCKED. Writers check their epoch
under FOR KEY SHARE in their own transactions (PostgresStore), which a takeover's
FOR UPDATE waits for, so a takeover and a stale write never both commit.

Locally a partition counts only until the start of the last successful renewal
plus the TTL minus a margin; a failed renewal gives every partition up at once,
and one that committed too late to count on frees the rows it just renewed or
took (at the epochs it committed), so others need not wait a TTL for them.
A scheduler holding more than its share gives the extras up (first locally,
then in the table) for the newcomers to take. The owner id is random per
process, never the hostname.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

import asyncpg

from ..engine.ownership import Fence, Member, OnChange
from .postgres import PostgresStore, read_ownership

log = logging.getLogger(__name__)

_MEMBER = (
    "INSERT INTO scheduler_members (owner, address, expires_at) VALUES ($1, $2, now() + $3 * interval '1 second')"
    " ON CONFLICT (owner) DO UPDATE SET address = EXCLUDED.address, expires_at = EXCLUDED.expires_at"
)
_RENEW = (
    "UPDATE partition_owners o SET expires_at = now() + $4 * interval '1 second'"
    " FROM unnest($1::int[], $2::bigint[]) AS h(p, e)"
    " WHERE o.partition = h.p AND o.epoch = h.e AND o.owner = $3 AND o.expires_at > now() RETURNING o.partition"
)
_TAKE = (
    "UPDATE partition_owners SET owner = $1, epoch = epoch + 1, expires_at = now() + $3 * interval '1 second'"
    " WHERE partition IN (SELECT partition FROM partition_owners WHERE owner = '' OR expires_at <= now()"
    " ORDER BY partition LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING partition, epoch"
)
_RELEASE = (
    "UPDATE partition_owners o SET owner = '', expires_at = '-infinity' FROM unnest($1::int[], $2::bigint[]) AS h(p, e)"
    " WHERE o.partition = h.p AND o.epoch = h.e AND o.owner = $3"
)
_LEAVE = "DELETE FROM scheduler_members WHERE owner = $1"
_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)  # OSError takes TimeoutError in


def share(partitions: int, owners: list[str], me: str) -> int:
    """How many partitions `me` should hold among the live `owners` (sorted): P split evenly,
    the first P mod n owners one more."""
    if me not in owners:
        owners = sorted([*owners, me])
    n, i = len(owners), owners.index(me)
    return partitions // n + (1 if i < partitions % n else 0)


class PostgresOwnership:
    def __init__(
        self, store: PostgresStore, *, address: str, ttl_s: float = 5.0, owner_id: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        if ttl_s < 1:
            raise ValueError(f"NOTIFY_OWNERSHIP_TTL must be at least 1 second, not {ttl_s:g}")
        self.owner_id = owner_id or f"scheduler-{os.urandom(8).hex()}"
        self.fence = Fence(store.partitions, monotonic=monotonic)
        self._store = store
        self.address = address
        self._ttl = ttl_s
        self._margin = ttl_s / 5  # stop acting this long before the row can expire
        self._interval = ttl_s / 4
        self._now = monotonic
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task | None = None
        self._on_change: OnChange = lambda gained, lost: None
        self._owners: dict[int, str] = {}
        self._members: dict[str, Member] = {}
        self._stopping = asyncio.Event()
        store.fence_with(self.owner_id, self.fence)

    # --- what routing reads ---------------------------------------------

    def owner_of(self, partition: int) -> Member | None:
        owner = self.owner_id if self.fence.holds(partition) else self._owners.get(partition)
        if owner == self.owner_id:
            return Member(self.owner_id, self.address)
        return self._members.get(owner) if owner else None

    def members(self) -> list[Member]:
        return sorted(self._members.values(), key=lambda m: m.owner)

    async def refresh(self) -> None:
        """Reads who owns what now (a forward found no owner in the view of the last tick)."""
        owners, live = await self._store.ownership_view()
        self._owners = owners
        self._members = {o: Member(o, a) for o, a in live}

    # --- life cycle -------------------------------------------------------

    async def start(self, on_change: OnChange) -> None:
        """Joins: the first tick takes this scheduler's share of orphans at once."""
        self._on_change = on_change
        await self._tick()
        self._task = asyncio.create_task(self._loop(), name="partition-ownership")

    async def stop(self) -> None:
        """Gives every partition up (locally first, then in the table) and leaves. Idempotent."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        held = self.fence.recorded()
        self._lose(set(held), "stopping")
        try:
            conn = await self._connection()
            await self._free(conn, held)
            await conn.execute(_LEAVE, self.owner_id)
        except _DB_ERRORS as e:
            log.warning("releasing partitions on stop failed (they expire within %g s): %s", self._ttl, e)
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._stopping.wait(), self._interval)
                return
            except TimeoutError:
                pass
            try:
                await self._tick()
            except Exception as e:  # noqa: BLE001 -- a failed renewal gives everything up; the next tick tries again
                log.error("partition ownership renewal failed, giving up %d partitions: %s", len(self.fence.recorded()), e)
                self._lose(set(self.fence.recorded()), "renewal failed")
                if self._conn is not None:
                    self._conn.terminate()
                    self._conn = None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._store.dsn, timeout=self._ttl / 2, server_settings=self._store.server_settings)
        return self._conn

    async def _tick(self) -> None:
        started = self._now()
        conn = await self._connection()
        held = self.fence.recorded()
        async with asyncio.timeout(self._ttl - self._margin):
            async with conn.transaction():
                await conn.execute(_MEMBER, self.owner_id, self.address, self._ttl)
                kept = {r[0] for r in await conn.fetch(_RENEW, list(held), list(held.values()), self.owner_id, self._ttl)}
                owners, live = await read_ownership(conn)
                target = share(self.fence.partitions, [o for o, _ in live], self.owner_id)
                taken = {}
                if len(kept) < target:
                    rows = await conn.fetch(_TAKE, self.owner_id, target - len(kept), self._ttl)
                    taken = {r[0]: r[1] for r in rows}
                    owners.update(dict.fromkeys(taken, self.owner_id))
        until = started + self._ttl - self._margin
        if self._now() >= until:  # the transaction took too long to count on: act for none of it
            self._lose(set(held), "renewal too slow")
            try:  # nor keep others from what it just committed
                await self._free(conn, {**{p: held[p] for p in kept}, **taken})
            except _DB_ERRORS as e:
                log.warning("freeing partitions after a slow renewal failed (they expire within %g s): %s", self._ttl, e)
            return
        self._members = {o: Member(o, a) for o, a in live}
        self._owners = owners
        lost = set(held) - kept
        self._lose(lost, "taken over or expired")
        for p in kept:
            self.fence.set(p, held[p], until)
        for p, epoch in taken.items():
            self.fence.set(p, epoch, until)
        if taken:
            log.info("took partitions %s (now %d of %d)", sorted(taken), len(kept) + len(taken), self.fence.partitions)
            self._on_change(set(taken), set())
        extra = len(kept) + len(taken) - target
        if extra > 0:
            await self._release(sorted(self.fence.held(), reverse=True)[:extra])

    async def _release(self, parts: list[int]) -> None:
        """Gives extras up for a newcomer: stop acting first, then free the rows."""
        held = self.fence.recorded()
        self._lose(set(parts), "balancing")
        await self._free(await self._connection(), {p: held[p] for p in parts})

    async def _free(self, conn: asyncpg.Connection, epochs: dict[int, int]) -> None:
        """Frees the rows of these partitions, each only while it is still ours at that epoch."""
        if epochs:
            await conn.execute(_RELEASE, list(epochs), list(epochs.values()), self.owner_id)

    def _lose(self, parts: set[int], why: str) -> None:
        if not parts:
            return
        self.fence.drop(parts)
        for p in parts:
            self._owners.pop(p, None)
        log.info("gave up partitions %s (%s)", sorted(parts), why)
        self._on_change(set(), parts)
