"""The engine acts only for the partitions its fence holds, on a fake clock: creates go
to held partitions (or NotOwner), giving a partition up drops its notifies and refuses
results of its leases, taking one loads its due work; a dropped dispatcher's leases go
back to the ready queue after the reconnect grace."""

import asyncio

import pytest
from notifyagent.common.ids import partition_of
from notifyagent.scheduler.engine.core import Engine, EngineSettings, ResultIn
from notifyagent.scheduler.engine.errors import Fenced, NotOwner
from notifyagent.scheduler.engine.model import State
from notifyagent.scheduler.engine.operations import Operations
from notifyagent.scheduler.engine.ownership import Fence
from notifyagent.scheduler.engine.retry import Outcome
from notifyagent.scheduler.store.memory import MemoryData, MemoryStore
from support import T0, FakeClock, create, granted_leases, spec

P = 4
FOREVER = float("inf")


@pytest.fixture
async def env():
    store = MemoryStore(MemoryData(), partitions=P)
    clock = FakeClock(T0)
    fence = Fence(P, monotonic=lambda: 0.0)
    for p in (0, 1):
        fence.set(p, 7, FOREVER)
    e = Engine(store=store, settings=EngineSettings(load_interval_s=3600, reconnect_grace_s=5.0), clock=clock, fence=fence)
    await e.start()
    yield e, store, clock, Operations(e, store), fence
    await e.stop()


async def turn():
    for _ in range(5):
        await asyncio.sleep(0)


def key_in(p: int) -> str:
    return next(k for k in (f"k{i}" for i in range(100)) if Fence(P, monotonic=lambda: 0.0).for_key(k) == p)


async def test_creates_go_to_held_partitions_and_a_foreign_ordering_key_is_not_owned_here(env):
    e, store, clock, ops, fence = env
    made = [n for _ in range(6) for n in await create(ops, [spec()])]  # one CreateNotify each
    assert {partition_of(n.id, P) for n in made} == {0, 1}
    batch = await create(ops, [spec() for _ in range(4)], batch=True)
    assert len({partition_of(n.id, P) for n in batch}) == 1, "a call's keyless notifies share one partition"
    [mine] = await create(ops, [spec(ordering_key=key_in(1))])
    assert partition_of(mine.id, P) == 1
    with pytest.raises(NotOwner) as e_info:
        await create(ops, [spec(ordering_key=key_in(3))])
    assert e_info.value.partition == 3
    foreign = mine.id[:-2] + "03"  # partition 3
    with pytest.raises(NotOwner):
        await ops.cancel(foreign)


async def test_a_partition_given_up_leaves_memory_and_its_results_are_refused(env):
    e, store, clock, ops, fence = env
    s = e.connect(dispatcher_id="d", version="", capacity=10, credit=10)
    made = [n for _ in range(4) for n in await create(ops, [spec()])]  # one CreateNotify each: both partitions
    await turn()
    leases = granted_leases(s)
    assert len(leases) == 4 and {lease.epoch for lease in leases} == {7}
    fence.drop([1])
    e.give_up_partitions({1})
    gone = [n.id for n in made if partition_of(n.id, P) == 1]
    assert gone and all(e.held(i) is None for i in gone)
    await e.complete(s, [ResultIn(lease.lease_id, Outcome(200, True, ""), T0, T0) for lease in leases])
    for n in made:
        stored = await store.get(n.id)
        assert stored.state == (State.PENDING if n.id in gone else State.SUCCEEDED), n.id


async def test_a_result_for_an_epoch_no_longer_held_is_refused(env):
    e, store, clock, ops, fence = env
    s = e.connect(dispatcher_id="d", version="", capacity=1, credit=1)
    [n] = await create(ops, [spec()])
    await turn()
    [lease] = granted_leases(s)
    fence.set(lease.partition, 8, FOREVER)  # lost and taken again meanwhile: a new epoch
    await e.complete(s, [ResultIn(lease.lease_id, Outcome(200, True, ""), T0, T0)])
    assert (await store.get(n.id)).state == State.PENDING


async def test_a_partition_taken_loads_its_due_work_at_once(env):
    e, store, clock, ops, fence = env
    other = Fence(P, monotonic=lambda: 0.0)
    other.set(3, 1, FOREVER)
    writer = Engine(store=store, settings=EngineSettings(load_interval_s=3600), clock=clock, fence=other)
    await writer.start()
    [n] = await create(Operations(writer, store), [spec()])  # made by the owner of partition 3
    await writer.stop()
    assert partition_of(n.id, P) == 3 and e.held(n.id) is None
    fence.set(3, 2, FOREVER)
    e.take_partitions({3})
    await turn()
    assert e.held(n.id) is not None
    s = e.connect(dispatcher_id="d", version="", capacity=1, credit=1)
    await turn()
    [lease] = granted_leases(s)
    assert lease.notify.id == n.id and (lease.partition, lease.epoch) == (3, 2)


async def test_a_dropped_dispatchers_leases_go_back_to_the_ready_queue_after_the_grace(env):
    e, store, clock, ops, fence = env
    s = e.connect(dispatcher_id="gone", version="", capacity=1, credit=1)
    [n] = await create(ops, [spec(timeout=30.0)])
    await turn()
    assert len(granted_leases(s)) == 1
    e.disconnect(s)
    other = e.connect(dispatcher_id="other", version="", capacity=1, credit=1)
    clock.advance(4_999)
    await turn()
    assert granted_leases(other) == [], "within the grace the lease waits for its dispatcher"
    clock.advance(1)
    await turn()
    [again] = granted_leases(other)
    assert again.notify.id == n.id and again.attempt == 1


async def test_a_dispatcher_back_within_the_grace_keeps_its_leases(env):
    e, store, clock, ops, fence = env
    s = e.connect(dispatcher_id="d", version="", capacity=1, credit=1)
    [n] = await create(ops, [spec(timeout=30.0)])
    await turn()
    [lease] = granted_leases(s)
    e.disconnect(s)
    back = e.connect(dispatcher_id="d", version="", capacity=1, credit=0)
    clock.advance(6_000)
    await turn()
    await e.complete(back, [ResultIn(lease.lease_id, Outcome(200, True, ""), T0, T0)])
    assert (await store.get(n.id)).state == State.SUCCEEDED


def test_each_scheduler_enforces_its_share_of_a_queue_limit():
    from notifyagent.scheduler.engine.model import QueueConfig
    from notifyagent.scheduler.engine.queues import Queues

    q = Queues()
    q.configure(QueueConfig("q", max_concurrent=5, rate=10.0, burst=4), 0)
    assert q.allowed("q", 4, 0) and not q.allowed("q", 5, 0)
    assert q.set_share(2, 0) and not q.set_share(2, 0)
    assert q.allowed("q", 2, 0) and not q.allowed("q", 3, 0), "5 / 2 rounded up"
    for _ in range(2):  # burst 4 / 2
        assert q.allowed("q", 0, 0)
        q.on_grant("q", 0)
    assert not q.allowed("q", 0, 0)
    assert q.ms_until_token(["q"], 0) == 201, "5 per second: a token each 200 ms"


def test_any_string_has_a_partition_and_ids_keep_theirs():
    """Fuzz: partition_of takes any string (ids from elsewhere, odd lengths, any characters) and
    an id made for a partition always maps back to it, for every P."""
    import random

    from notifyagent.common.ids import IdGenerator, MAX_PARTITIONS

    rng = random.Random(5)
    ids = IdGenerator()
    prev = ""
    for _ in range(2000):
        size = rng.choice([0, 1, 2, 24, 25, 26, 27, 40])
        junk = "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x3000)])) for _ in range(size))
        p_count = rng.randrange(1, MAX_PARTITIONS + 1)
        assert 0 <= partition_of(junk, p_count) < p_count
        want = rng.randrange(p_count)
        made = ids.new(T0 + rng.randrange(3), partition=want)
        assert len(made) == 26 and partition_of(made, p_count) == want
        assert made > prev, "ids still sort by creation, whatever their partition"
        prev = made


async def test_taking_partitions_while_memory_is_full_reads_one_page_and_pages_the_rest_in_as_room_frees():
    store = MemoryStore(MemoryData(), partitions=P)
    clock = FakeClock(T0)
    other = Fence(P, monotonic=lambda: 0.0)
    other.set(3, 1, FOREVER)
    writer = Engine(store=store, settings=EngineSettings(load_interval_s=3600), clock=clock, fence=other)
    await writer.start()
    made = await create(Operations(writer, store), [spec() for _ in range(30)], batch=True)  # partition 3's
    await writer.stop()
    reads = []
    load_due = store.load_due

    async def counted(**kw):
        page = await load_due(**kw)
        reads.append(len(page))
        return page

    store.load_due = counted
    fence = Fence(P, monotonic=lambda: 0.0)
    fence.set(0, 7, FOREVER)
    e = Engine(store=store, settings=EngineSettings(load_interval_s=3600, load_batch=4, max_in_memory=10), clock=clock, fence=fence)
    await e.start()
    try:
        reads.clear()
        fence.set(3, 2, FOREVER)
        e.take_partitions({3})
        await turn()
        assert e.snapshot().held == 10, "memory holds at most the bound"
        assert sum(reads) <= 10, f"taking partitions while memory is full read {sum(reads)} rows, not only what fits"
        s = e.connect(dispatcher_id="d", version="", capacity=30, credit=30)
        delivered = []
        for _ in range(50):
            await turn()
            leases = granted_leases(s)
            delivered += [lease.notify.id for lease in leases]
            if leases:
                await e.complete(s, [ResultIn(lease.lease_id, Outcome(200, True, ""), T0, T0) for lease in leases])
            if len(delivered) == 30:
                break
        assert sorted(delivered) == sorted(n.id for n in made), "the rest is paged in as room frees, each once"
    finally:
        await e.stop()


def test_held_sorted_follows_every_change_and_expiry():
    """The create path's cached view of the held partitions: fresh after set, drop and expiry."""
    now = [0.0]
    fence = Fence(8, monotonic=lambda: now[0])
    assert fence.held_sorted() == ()
    fence.set(5, 1, 10.0)
    fence.set(2, 1, 20.0)
    assert fence.held_sorted() == (2, 5)
    fence.drop([2])
    assert fence.held_sorted() == (5,)
    fence.set(7, 3, 30.0)
    assert fence.held_sorted() == (5, 7)
    now[0] = 10.0  # partition 5's hold ran out
    assert fence.held_sorted() == (7,) == tuple(sorted(fence.held()))
    now[0] = 30.0
    assert fence.held_sorted() == ()


async def test_a_results_write_fenced_for_one_partition_still_commits_the_others(env):
    """Results of a loop turn share one store write. When the store fences it for a partition
    that moved before this scheduler noticed, only that partition's results are refused: the
    rest commit (undoing them would make their notifies due again and send them twice)."""
    e, store, clock, ops, fence = env
    s = e.connect(dispatcher_id="d", version="", capacity=10, credit=10)
    made = []
    for _ in range(6):
        made += await create(ops, [spec()])
    moved = {n.id for n in made if partition_of(n.id, P) == 1}
    assert moved and len(moved) < len(made), "the notifies span both held partitions"
    await turn()
    leases = granted_leases(s)
    assert len(leases) == len(made)
    save_results = store.save_results

    async def fenced_for_partition_1(writes, **kw):
        if any(partition_of(w.notify.id, P) == 1 for w in writes):
            raise Fenced([1])  # as PostgresStore does when partition 1's epoch moved on
        return await save_results(writes, **kw)

    store.save_results = fenced_for_partition_1
    await e.complete(s, [ResultIn(lease.lease_id, Outcome(200, True, ""), T0, T0) for lease in leases])
    for n in made:
        stored = await store.get(n.id)
        assert stored.state == (State.PENDING if n.id in moved else State.SUCCEEDED), n.id
    assert all(e.held(i) is None for i in moved), "what the store refused leaves memory"
