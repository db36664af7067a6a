"""Partitions and fenced ownership in the store.

Every adapter: the number of partitions is fixed when a store is created, and
the partition filters agree with common.ids.partition_of. On the real
PostgreSQL: ownership rows with epochs — a stale epoch's write is refused and
commits nothing, two owners never both commit for one partition, a takeover
waits for a write in flight, partitions balance among live schedulers and a
dead one's are taken once they expire.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from notifyagent.common.config import ConfigError
from notifyagent.common.ids import IdGenerator, partition_of
from notifyagent.scheduler.engine.errors import Fenced
from notifyagent.scheduler.engine.model import State
from notifyagent.scheduler.store.memory import MemoryData, MemoryStore
from notifyagent.scheduler.store.postgres import PostgresStore
from notifyagent.scheduler.store.postgres_ownership import PostgresOwnership, share
from notifyagent.scheduler.store.sqlite import SqliteStore
from test_store_contract import PG_DSN, notify, postgres_admin

ADAPTERS = ["sqlite", "memory", pytest.param("postgres", marks=pytest.mark.postgres)]
P = 8


class Stores:
    """Builds stores of one kind over one backing (file, data or schema); closes them all."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind, self.tmp_path = kind, tmp_path
        self.data = MemoryData()
        self.schema = f"t_{uuid.uuid4().hex[:16]}"
        self.opened = []
        self.owners = []

    async def open(self, partitions: int = P):
        if self.kind == "sqlite":
            store = SqliteStore(self.tmp_path / "notify.db", partitions=partitions)
        elif self.kind == "memory":
            store = MemoryStore(self.data, partitions=partitions)
        else:
            store = PostgresStore(PG_DSN, schema=self.schema, pool_size=2, partitions=partitions, idle_tx_timeout_s=5)
        await store.open()
        self.opened.append(store)
        return store

    async def close(self) -> None:
        for own in self.owners:
            await own.stop()
        for s in self.opened:
            await s.close()
        if self.kind == "postgres":
            admin = await postgres_admin()
            await admin.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            await admin.close()


@pytest.fixture(params=ADAPTERS)
async def stores(request, tmp_path):
    if request.param == "postgres":
        (await postgres_admin()).terminate()  # skips (or fails in CI) without the server
    s = Stores(request.param, tmp_path)
    yield s
    await s.close()


async def test_partitions_are_fixed_when_a_store_is_created(stores: Stores) -> None:
    first = await stores.open(P)
    await first.close()
    with pytest.raises(ConfigError, match=f"NOTIFY_PARTITIONS is 4 but .* created with {P}"):
        await stores.open(4)
    again = await stores.open(P)
    assert again.partitions == P


@pytest.mark.parametrize("seed", [1, 2])
async def test_partition_filters_agree_with_the_ids(stores: Stores, seed: int) -> None:
    store = await stores.open(P)
    rng = random.Random(seed)
    ids = IdGenerator()
    odd = ["a", "Z" * 30, "01J" + "u" * 23, "01J" + "~!" * 12, ""]  # short, long, outside the alphabet
    items = []
    for i in range(60):
        n = notify(i, due_ms=1_000 + i, trigger_key="t", group_key="g")
        n.id = odd[i] if i < len(odd) and odd[i] else ids.new(1_000 + i, partition=rng.randrange(1024))
        items.append(n)
    await store.insert(items)
    for p in range(P):
        want = sorted(n.id for n in items if partition_of(n.id, P) == p)
        got = await store.load_due(after=(-1, ""), until_ms=10_000, limit=1000, partitions=frozenset([p]))
        assert sorted(n.id for n in got) == want, f"partition {p}"
    some = frozenset(rng.sample(range(P), 3))
    fired = await store.trigger("t", state=State.PENDING, due_ms=5, partitions=frozenset())
    assert fired == []
    waiting = [n for n in items]
    for n in waiting:
        await store.transition(n.id, allowed=(State.PENDING,), state=State.WAITING_TRIGGER, due_ms=None, complete_ms=None)
    fired = await store.trigger("t", state=State.PENDING, due_ms=5, partitions=some)
    assert sorted(n.id for n in fired) == sorted(n.id for n in items if partition_of(n.id, P) in some)
    cancelled, _ = await store.cancel_group("g", complete_ms=9, partitions=some)
    assert sorted(i for i, _ in cancelled) == sorted(n.id for n in items if partition_of(n.id, P) in some)


# --- PostgreSQL: ownership rows --------------------------------------------------


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def pg(tmp_path):
    s = Stores("postgres", tmp_path)
    (await postgres_admin()).terminate()
    yield s
    await s.close()


async def owner(pg: Stores, name: str, ttl: float = 2.0, clock: FakeMonotonic | None = None):
    store = await pg.open(P)
    own = PostgresOwnership(store, address=f"{name}:1", ttl_s=ttl, owner_id=name, monotonic=clock or FakeMonotonic())
    events: list[tuple[set[int], set[int]]] = []
    own._on_change = lambda gained, lost: events.append((gained, lost))
    pg.owners.append(own)
    return store, own, events


def in_partition(p: int, i: int):
    n = notify(i)
    n.id = IdGenerator().new(1_000, partition=p)
    return n


@pytest.mark.postgres
async def test_a_stale_epochs_write_is_refused_and_commits_nothing(pg: Stores) -> None:
    a_store, a, _ = await owner(pg, "a", ttl=1.0)
    b_store, b, _ = await owner(pg, "b", ttl=1.0)
    await a._tick()
    assert len(a.fence.held()) == P
    stale = dict(a.fence.held())
    await asyncio.sleep(1.2)  # a is paused past its TTL (its fake clock says its fence still holds)
    await b._tick()
    assert b.fence.held() == {p: e + 1 for p, e in stale.items()}, "b takes every partition by bumping its epoch"
    with pytest.raises(Fenced):
        await a_store.insert([in_partition(3, 1)])
    n = await b_store.get(in_partition(3, 1).id)
    assert n is None and await b_store.counts() == {}
    done = await b_store.insert([in_partition(3, 2)])
    assert (await b_store.get(done[0].id)) is not None


@pytest.mark.postgres
async def test_two_owners_never_both_commit_for_one_partition(pg: Stores) -> None:
    a_store, a, _ = await owner(pg, "a", ttl=1.0)
    b_store, b, _ = await owner(pg, "b", ttl=1.0)
    await a._tick()
    await asyncio.sleep(1.2)
    await b._tick()  # both fences claim partition 5: a's with the old epoch
    assert a.fence.holds(5) and b.fence.holds(5)
    tries = [(a_store, in_partition(5, i)) for i in range(40)] + [(b_store, in_partition(5, 100 + i)) for i in range(40)]
    random.Random(3).shuffle(tries)
    results = await asyncio.gather(*(s.insert([n]) for s, n in tries), return_exceptions=True)
    committed = {s is a_store for (s, _), r in zip(tries, results) if not isinstance(r, BaseException)}
    refused = [r for r in results if isinstance(r, BaseException)]
    assert committed == {False} and len(refused) == 40 and all(isinstance(r, Fenced) for r in refused)
    assert sum((await b_store.counts()).values()) == 40


@pytest.mark.postgres
async def test_a_takeover_waits_for_a_write_in_flight(pg: Stores) -> None:
    a_store, a, _ = await owner(pg, "a", ttl=1.0)
    b_store, b, _ = await owner(pg, "b", ttl=1.0)
    await a._tick()
    gate, inside = asyncio.Event(), asyncio.Event()

    async def slow_op(conn):
        inside.set()
        await gate.wait()  # a's write transaction is open, its epoch checked (FOR KEY SHARE)
        await conn.execute("UPDATE notifies SET due_ms = 1 WHERE false")
        return "committed"

    write = a_store._write(slow_op, frozenset([2]))
    await inside.wait()
    await asyncio.sleep(1.2)  # a's rows expire meanwhile
    await b._tick()
    assert 2 not in b.fence.held(), "the row a's open write locked is skipped, not taken"
    assert len(b.fence.held()) == P - 1
    gate.set()
    assert await write == "committed"
    await b._tick()
    assert b.fence.holds(2) and b.fence.held()[2] == a.fence.recorded()[2] + 1


@pytest.mark.postgres
async def test_partitions_balance_among_live_schedulers(pg: Stores) -> None:
    _, a, a_events = await owner(pg, "a")
    _, b, b_events = await owner(pg, "b")
    await a._tick()
    assert len(a.fence.held()) == P and a_events == [(set(range(P)), set())]
    await b._tick()  # b joins: nothing is free yet
    assert b.fence.held() == {}
    await a._tick()  # a sees two members and gives its extras up
    assert len(a.fence.held()) == share(P, ["a", "b"], "a") == P // 2
    assert a_events[-1][1] and not a_events[-1][0]
    await b._tick()
    assert set(b.fence.held()) == set(range(P)) - set(a.fence.held())
    assert b_events[-1] == (set(b.fence.held()), set())
    assert {m.owner for m in b.members()} == {"a", "b"}
    assert b.owner_of(min(a.fence.held())).address == "a:1"


@pytest.mark.postgres
async def test_renewal_keeps_only_the_exact_owner_and_epoch(pg: Stores) -> None:
    _, a, a_events = await owner(pg, "a", ttl=1.0)
    _, b, _ = await owner(pg, "b", ttl=1.0)
    await a._tick()
    await asyncio.sleep(1.2)
    await b._tick()
    await a._tick()  # a wakes up: its renewal finds other epochs, it gives everything up
    assert a.fence.held() == {} and a_events[-1] == (set(), set(range(P)))
    assert len(b.fence.held()) == P


@pytest.mark.postgres
async def test_the_local_fence_ends_before_the_row_can_expire(pg: Stores) -> None:
    clock = FakeMonotonic()
    _, a, _ = await owner(pg, "a", ttl=2.0, clock=clock)
    await a._tick()
    assert a.fence.holds(0)
    clock.now += 2.0 - 2.0 / 5  # the TTL minus the margin after the renewal started
    assert not a.fence.holds(0) and a.fence.held() == {}


def test_a_scheduler_on_a_store_made_with_other_partitions_refuses_to_start_in_one_line(tmp_path):
    store = f"sqlite:///{tmp_path}/p.db"
    base = [sys.executable, "-m", "notifyagent", "scheduler", "--store", store, "--http-addr", "", "--grpc-addr", "127.0.0.1:0"]
    first = subprocess.Popen([*base, "--partitions", "16"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "p.db").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        first.terminate()
        first.communicate(timeout=20)
    done = subprocess.run([*base, "--partitions", "8"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: NOTIFY_PARTITIONS is 8 but the store {tmp_path}/p.db was created with 16;"
        " partitions are fixed when a store is created"
    )


class SlowClock(FakeMonotonic):
    """Jumps `stall` seconds right after the next reading: the renewal that starts then ends too late."""

    stall = 0.0

    def __call__(self) -> float:
        now, self.now, self.stall = self.now, self.now + self.stall, 0.0
        return now


@pytest.mark.postgres
async def test_a_renewal_too_slow_to_count_on_frees_what_it_committed(pg: Stores) -> None:
    clock = SlowClock()
    _, a, a_events = await owner(pg, "a", ttl=2.0, clock=clock)
    _, b, _ = await owner(pg, "b", ttl=2.0)
    clock.stall = 2.0
    await a._tick()  # takes every partition, but commits too late to count on
    assert a.fence.recorded() == {} and not a_events
    await b._tick()
    assert len(b.fence.held()) == P // 2, "b takes its share at once, not a TTL later"
    await a._tick()
    assert set(a.fence.held()) == set(range(P)) - set(b.fence.held()), "and a the rest, which it had freed"
    clock.stall = 2.0
    await a._tick()  # a renews what it holds, too late
    assert a.fence.held() == {} and a_events[-1] == (set(), set(range(P)) - set(b.fence.held()))
    _, c, _ = await owner(pg, "c", ttl=2.0)
    await c._tick()
    assert len(c.fence.held()) == share(P, ["a", "b", "c"], "c") > 0, "what a renewed is free again at once"
    assert not set(c.fence.held()) & set(b.fence.held())
