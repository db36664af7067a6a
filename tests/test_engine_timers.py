"""Timer and rate-limit wake-ups in the engine, on a fake clock and the in-memory store."""

import asyncio
from notifyagent.scheduler.engine.core import Engine, EngineSettings
from notifyagent.scheduler.engine.model import Notification, QueueConfig, State
from notifyagent.scheduler.engine.operations import Operations
from notifyagent.scheduler.store.memory import MemoryStore
from support import T0, FakeClock, create, granted_leases, spec


async def turn():
    for _ in range(5):
        await asyncio.sleep(0)


def granted(session):
    return [lease.notify.id for lease in granted_leases(session)]


async def test_a_pending_notify_due_a_little_later_is_not_dropped():
    """PENDING rows stamped by a clock a few ms ahead (HA peer, NTP step back) are due 'in the future'."""
    store = MemoryStore(); await store.open()
    n = Notification(id="N1", spec=spec(), state=State.PENDING, create_ms=T0 + 50, due_ms=T0 + 50)
    await store.insert([n])
    clock = FakeClock(T0)
    e = Engine(store=store, settings=EngineSettings(load_interval_s=3600), clock=clock)
    await e.start()
    try:
        s = e.connect(dispatcher_id="d", version="", capacity=1, credit=1)
        clock.advance(100)
        for _ in range(5): await asyncio.sleep(0)
        assert granted(s) == ["N1"], f"N1 is live ({e.held('N1').state.name}) but in no wheel/ready/lease"
    finally:
        await e.stop(); await store.close()


async def test_a_slow_queues_token_wait_does_not_delay_a_fast_queue():
    store = MemoryStore(); await store.open()
    clock = FakeClock(T0)
    e = Engine(store=store, settings=EngineSettings(load_interval_s=3600), clock=clock)
    await e.start([QueueConfig("slow", rate=0.1, burst=1), QueueConfig("fast", rate=100, burst=1)])
    ops = Operations(e, store)
    try:
        s = e.connect(dispatcher_id="d", version="", capacity=10, credit=10)
        await create(ops, [spec(queue="slow"), spec(queue="slow")])
        await turn(); clock.advance(50); await turn()
        await create(ops, [spec(queue="fast"), spec(queue="fast")])
        await turn(); clock.advance(500); await turn()   # the fast queue's next token is 10 ms away
        got = granted(s)
        assert len(got) == 3, f"{len(got)} granted; the 2nd 'fast' waits for the 'slow' queue's 10 s timer"
    finally:
        await e.stop(); await store.close()
