"""Races and store failures in the engine: nothing is stranded, skipped or left holding a key.

Engine-level reproductions (SQLite store, fake clock, a Session with no server)."""
import asyncio, threading
import pytest
from notifyagent.scheduler.engine.core import Engine, EngineSettings, ResultIn
from notifyagent.scheduler.engine.errors import FailedPrecondition, Unavailable
from notifyagent.scheduler.engine.model import State
from notifyagent.scheduler.engine.operations import Operations
from notifyagent.scheduler.engine.retry import Outcome
from notifyagent.scheduler.store.sqlite import SqliteStore
from support import T0, FakeClock, create, granted_leases, spec


class Flaky:
    """Wraps a store: fail the next N load_due / save_results calls; hold get() on an event."""
    def __init__(self, inner):
        self.inner, self.fail_load, self.fail_save, self.hold_get = inner, 0, 0, None
    def __getattr__(self, name): return getattr(self.inner, name)
    async def load_due(self, **kw):
        if self.fail_load:
            self.fail_load -= 1
            raise Unavailable("store briefly down")
        return await self.inner.load_due(**kw)
    async def save_results(self, writes, **kw):
        if self.fail_save:
            self.fail_save -= 1
            raise Unavailable("store briefly down")
        return await self.inner.save_results(writes, **kw)
    async def get(self, notify_id):
        if self.hold_get is not None:
            await self.hold_get.wait()
        return await self.inner.get(notify_id)


@pytest.fixture
async def env(tmp_path):
    inner = SqliteStore(tmp_path / "s.db"); await inner.open()
    store = Flaky(inner)
    clock = FakeClock(T0)
    e = Engine(store=store, settings=EngineSettings(horizon_s=300, load_interval_s=3600), clock=clock)
    await e.start()
    yield e, store, clock, Operations(e, store)
    await e.stop(); await inner.close()


grants = granted_leases


async def turn():
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_failed_load_does_not_skip_notifies(env):
    e, store, clock, ops = env
    [n] = await create(ops, [spec(deliver_at_ms=T0 + 400_000)])   # beyond the horizon: the loader's job
    assert e.held(n.id) is None
    clock.advance(200_000)
    store.fail_load = 1
    with pytest.raises(Unavailable):
        await e.load()                  # the loop logs this and tries again later
    await e.load()
    assert e.held(n.id) is not None, "the notify due at T0+400s is in the store, active, and never loaded"


async def test_a_failed_result_commit_does_not_strand_the_notify(env):
    e, store, clock, ops = env
    s = e.connect(dispatcher_id="d1", version="", capacity=4, credit=4)
    [n] = await create(ops, [spec(ordering_key="k")])
    await turn()
    [lease] = grants(s)
    store.fail_save = 1
    # the commit fails once and is tried again until the store takes it (a result is never dropped)
    done = asyncio.ensure_future(e.complete(s, [ResultIn(lease.lease_id, Outcome(500, False, "500"), T0, T0)]))
    await turn()
    clock.advance(100)  # the retry's wait
    await asyncio.wait_for(done, 5)
    assert store.fail_save == 0
    # the dispatcher reconnects and reports again (as if the ack were lost): refused, nothing changes
    await e.complete(s, [ResultIn(lease.lease_id, Outcome(500, False, "500"), T0, T0)])
    clock.advance(3_600_000)
    await e.load(); await turn()
    mine, snap = e.held(n.id), e.snapshot()
    print("in memory:", mine and mine.state.name, "leases:", snap.leases, "wheel:", snap.wheel, "ready:", snap.ready)
    stored = await store.get(n.id)
    assert grants(s) or stored.state != State.PENDING, \
        f"store says {stored.state.name}, attempts {stored.attempt_count}; memory holds it as {mine.state.name} in no wheel/ready/lease"


async def test_update_racing_an_expire_at_failure_does_not_block_the_ordering_key(env):
    e, store, clock, ops = env
    s = e.connect(dispatcher_id="d1", version="", capacity=4, credit=0)
    a, b = await create(ops, [spec(ordering_key="k", expire_at_ms=T0 + 1_000), spec(ordering_key="k")])
    clock.advance(2_000)                # a's expire_at has passed
    store.hold_get = asyncio.Event()
    upd = asyncio.create_task(ops.update(a.id, {"expire_at"}, spec(expire_at_ms=T0 + 100_000)))  # extend the deadline
    await turn()                        # UpdateNotify is reading the store
    busy = threading.Event()
    store.inner._write(lambda conn: busy.wait(5))   # the writer is busy (the previous group's fsync)
    e.add_credit(s, 4); await turn()    # grant time: a fails unattempted (expire_at); its write is queued
    store.hold_get.set(); await turn()  # UpdateNotify goes on: pops a from memory, queues its write
    busy.set()
    with pytest.raises(FailedPrecondition):
        await upd                        # "a is FAILED"
    await turn(); await asyncio.sleep(0.05); await turn()
    assert (await store.get(a.id)).state == State.FAILED
    assert [l.notify.id for l in grants(s)] == [b.id], f"b is never granted: key k still held ({e.held(a.id)})"


async def test_cancel_racing_a_retry_result_commit_answers_ok(env):
    e, store, clock, ops = env
    s = e.connect(dispatcher_id="d1", version="", capacity=4, credit=4)
    [n] = await create(ops, [spec()])
    await turn()
    [lease] = grants(s)
    busy = threading.Event()
    store.inner._write(lambda conn: busy.wait(5))   # the writer is busy (the previous group's fsync)
    commit = asyncio.create_task(e.complete(s, [ResultIn(lease.lease_id, Outcome(500, False, "500"), T0, T0)]))
    await turn()                                     # result decided in memory (RETRY_WAIT), write queued
    cancel = asyncio.create_task(ops.cancel(n.id))
    await turn()
    busy.set()
    await commit
    try:
        got = await cancel
        ok = True
    except FailedPrecondition as err:
        ok, got = False, err
    stored = await store.get(n.id)
    print("cancel ->", got, "| stored", stored.state.name, "complete_ms", stored.complete_ms, "due_ms", stored.due_ms)
    assert ok, f"CancelNotify failed ({got}) yet the row is {stored.state.name} with complete_ms={stored.complete_ms}"
