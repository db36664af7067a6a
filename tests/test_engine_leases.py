"""Leases, retries, expiry and drain in the engine, on a fake clock: time moves only
when a test moves it, so nothing here sleeps."""

import asyncio
import gc

import pytest
from notifyagent.scheduler.engine.core import Engine, EngineSettings, ResultIn
from notifyagent.scheduler.engine.leases import Lease
from notifyagent.scheduler.engine.model import RetryPolicy, State
from notifyagent.scheduler.engine.operations import Operations
from notifyagent.scheduler.engine.retry import Outcome
from notifyagent.scheduler.engine.sessions import Ack, Revoke
from notifyagent.scheduler.store.memory import MemoryStore
from support import T0, FakeClock, create, granted_leases, spec

MARGIN_S = 5.0


@pytest.fixture
async def env():
    store = MemoryStore()
    clock = FakeClock(T0)
    e = Engine(store=store, settings=EngineSettings(lease_margin_s=MARGIN_S, load_interval_s=3600), clock=clock)
    await e.start()
    yield e, store, clock, Operations(e, store)
    await e.stop()


async def turn():
    for _ in range(5):
        await asyncio.sleep(0)


def sent(session):
    return session.take() or []


async def test_an_expired_lease_is_a_failed_attempt_and_the_notify_is_granted_again(env):
    e, store, clock, ops = env
    s = e.connect(dispatcher_id="d", version="", capacity=2, credit=2)
    retry = RetryPolicy(max_attempts=3, min_backoff=1.0, max_backoff=1.0, multiplier=1.0)
    [n] = await create(ops, [spec(timeout=10.0, retry=retry)])
    await turn()
    [first] = granted_leases(s)
    assert first.deadline_ms == T0 + 15_000
    clock.advance(14_999)
    await turn()
    assert e.held(n.id).state == State.DELIVERING
    clock.advance(1)  # the deadline
    await turn()
    stored = await store.get(n.id)
    assert stored.state == State.RETRY_WAIT and "lease expired" in stored.attempts[0].error
    assert granted_leases(s) == [], "not before its backoff"
    live = e.connect(dispatcher_id="live", version="", capacity=1, credit=1)
    clock.advance(1_000)  # the backoff: 1 s less up to 20 % jitter
    await turn()
    [second] = granted_leases(live)
    assert second.notify.id == n.id and second.attempt == 2
    assert granted_leases(s) == [], "the stream that let its lease expire gets nothing until it reports"


async def test_a_stalled_stream_takes_grants_again_once_it_reports(env):
    e, store, clock, ops = env
    s = e.connect(dispatcher_id="d", version="", capacity=3, credit=3)  # one credit stays unused
    retry = RetryPolicy(max_attempts=3, min_backoff=1.0, max_backoff=1.0, multiplier=1.0)
    [a, b] = await create(ops, [spec(timeout=10.0, retry=retry), spec(timeout=30.0)])
    await turn()
    leases = {lease.notify.id: lease for lease in granted_leases(s)}
    clock.advance(15_000)  # a's deadline; b's is later
    await turn()
    clock.advance(1_000)
    await turn()
    assert e.held(a.id).state == State.PENDING and granted_leases(s) == [], "stalled: a waits despite its credit"
    await e.complete(s, [ResultIn(leases[b.id].lease_id, Outcome(200, True, ""), T0, T0)])
    await turn()
    assert [lease.notify.id for lease in granted_leases(s)] == [a.id], "it reported: it may take grants again"


async def test_a_result_after_the_deadline_is_refused_acked_and_changes_nothing(env):
    e, store, clock, ops = env
    s = e.connect(dispatcher_id="d", version="", capacity=1, credit=1)
    [n] = await create(ops, [spec(timeout=1.0, retry=RetryPolicy(max_attempts=1))])
    await turn()
    [lease] = granted_leases(s)
    clock.advance(6_001)
    await turn()
    assert (await store.get(n.id)).state == State.FAILED
    await e.complete(s, [ResultIn(lease.lease_id, Outcome(200, True, ""), T0, T0)])
    assert Ack(lease.lease_id) in sent(s)
    after = await store.get(n.id)
    assert after.state == State.FAILED and len(after.attempts) == 1


async def test_a_second_result_for_one_lease_counts_once(env):
    e, store, clock, ops = env
    s = e.connect(dispatcher_id="d", version="", capacity=1, credit=1)
    [n] = await create(ops, [spec()])
    await turn()
    [lease] = granted_leases(s)
    ok = ResultIn(lease.lease_id, Outcome(200, True, ""), T0, T0)
    await asyncio.gather(e.complete(s, [ok]), e.complete(s, [ok]))
    stored = await store.get(n.id)
    assert stored.state == State.SUCCEEDED and stored.attempt_count == 1 and len(stored.attempts) == 1
    assert e.snapshot().sent_ok == 1


async def test_a_finished_lease_is_let_go_at_once_not_kept_until_its_deadline(env):
    """The wheel keeps a lease's deadline until it passes (lazy removal): by the lease's id, so a
    lease that ended (and its notify, spec and request) is not kept in memory that long."""
    e, store, clock, ops = env
    s = e.connect(dispatcher_id="d", version="", capacity=1, credit=1)
    [n] = await create(ops, [spec(timeout=10.0)])
    await turn()
    [lease] = granted_leases(s)
    lease_id = lease.lease_id
    await e.complete(s, [ResultIn(lease_id, Outcome(200, True, ""), T0, T0)])
    del lease
    await turn()  # the results write is done with it
    gc.collect()
    assert [o for o in gc.get_objects() if isinstance(o, Lease) and o.lease_id == lease_id] == []
    clock.advance(15_000)  # its deadline passes and changes nothing
    await turn()
    assert (await store.get(n.id)).state == State.SUCCEEDED and e.held(n.id) is None


async def test_extending_a_lease_moves_its_deadline(env):
    e, store, clock, ops = env
    s = e.connect(dispatcher_id="d", version="", capacity=1, credit=1)
    [n] = await create(ops, [spec(timeout=1.0)])
    await turn()
    [lease] = granted_leases(s)
    clock.advance(5_000)
    e.extend(s, lease.lease_id, 30.0)
    clock.advance(20_000)  # past the first deadline (T0 + 6 s)
    await turn()
    assert e.held(n.id).state == State.DELIVERING
    await e.complete(s, [ResultIn(lease.lease_id, Outcome(200, True, ""), T0, T0)])
    assert (await store.get(n.id)).state == State.SUCCEEDED


async def test_a_delayed_notify_is_granted_at_its_time_not_a_millisecond_before(env):
    e, store, clock, ops = env
    s = e.connect(dispatcher_id="d", version="", capacity=1, credit=1)
    [n] = await create(ops, [spec(deliver_at_ms=T0 + 90_000)])
    clock.advance(89_999)
    await turn()
    assert granted_leases(s) == []
    clock.advance(1)
    await turn()
    assert [lease.notify.id for lease in granted_leases(s)] == [n.id]


async def test_cancel_while_leased_revokes_and_a_late_result_does_not_revive_it(env):
    e, store, clock, ops = env
    s = e.connect(dispatcher_id="d", version="", capacity=1, credit=1)
    [n] = await create(ops, [spec()])
    await turn()
    [lease] = granted_leases(s)
    await ops.cancel(n.id)
    assert Revoke(lease.lease_id) in sent(s)
    await e.complete(s, [ResultIn(lease.lease_id, Outcome(200, True, ""), T0, T0)])
    assert (await store.get(n.id)).state == State.CANCELLED
    assert e.snapshot().leases == 0


async def test_counts_show_due_and_leased_notifies_as_memory_holds_them(env):
    e, store, clock, ops = env
    a, b, c = await create(ops, [spec(deliver_at_ms=T0 + 1_000) for _ in range(3)])
    assert (await e.counts()) == {("default", State.SCHEDULED): 3}
    clock.advance(1_000)
    await turn()
    assert (await e.counts()) == {("default", State.PENDING): 3}, "due: the store still says SCHEDULED"
    s = e.connect(dispatcher_id="d", version="", capacity=1, credit=1)
    await turn()
    [lease] = granted_leases(s)
    assert (await e.counts()) == {("default", State.PENDING): 2, ("default", State.DELIVERING): 1}
    await e.complete(s, [ResultIn(lease.lease_id, Outcome(200, True, ""), T0, T0)])
    assert (await e.counts()) == {("default", State.PENDING): 2, ("default", State.SUCCEEDED): 1}


async def test_drain_returns_when_the_last_lease_ends(env):
    e, store, clock, ops = env
    s = e.connect(dispatcher_id="d", version="", capacity=1, credit=1)
    await create(ops, [spec()])
    await turn()
    [lease] = granted_leases(s)
    drain = asyncio.create_task(e.drain(30.0))
    await turn()
    assert not drain.done()
    await e.complete(s, [ResultIn(lease.lease_id, Outcome(200, True, ""), T0, T0)])
    await asyncio.wait_for(drain, 5)  # the clock stands still: only the event can end it
    assert not e.accepting


async def test_drain_gives_up_after_its_grace_on_the_clock(env):
    e, store, clock, ops = env
    s = e.connect(dispatcher_id="d", version="", capacity=1, credit=1)
    await create(ops, [spec()])
    await turn()
    assert len(granted_leases(s)) == 1
    drain = asyncio.create_task(e.drain(30.0))
    await turn()
    clock.advance(29_999)
    await turn()
    assert not drain.done()
    clock.advance(1)
    await asyncio.wait_for(drain, 5)
    assert e.snapshot().leases == 1


async def test_get_shows_delivering_until_the_attempts_result_is_committed(env, monkeypatch):
    """A result is applied in memory before the store commits it: Get meanwhile shows DELIVERING,
    never the state stored before the attempt (PENDING without it), then the committed result."""
    e, store, clock, ops = env
    s = e.connect(dispatcher_id="d", version="", capacity=1, credit=1)
    [n] = await create(ops, [spec(timeout=10.0)])
    await turn()
    [lease] = granted_leases(s)
    assert (await ops.get(n.id)).state == State.DELIVERING
    gate, save = asyncio.Event(), store.save_results

    async def held_back(writes, **kw):
        await gate.wait()
        return await save(writes, **kw)

    monkeypatch.setattr(store, "save_results", held_back)
    done = asyncio.create_task(e.complete(s, [ResultIn(lease.lease_id, Outcome(200, True, ""), T0, T0)]))
    await turn()
    assert e.held(n.id).state == State.SUCCEEDED  # memory is ahead of the store
    got = await ops.get(n.id)
    assert (got.state, got.attempts) == (State.DELIVERING, ())
    gate.set()
    await done
    await turn()
    got = await ops.get(n.id)
    assert got.state == State.SUCCEEDED and len(got.attempts) == 1
