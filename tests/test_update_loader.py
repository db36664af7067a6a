"""UpdateNotify racing the horizon loader."""

import asyncio, threading
from notifyagent.scheduler.engine.core import Engine, EngineSettings
from notifyagent.scheduler.engine.operations import Operations
from notifyagent.scheduler.store.sqlite import SqliteStore
from support import T0, FakeClock, create, spec

async def test_update_racing_the_loader_keeps_the_new_schedule(tmp_path):
    store = SqliteStore(tmp_path / "s.db"); await store.open()
    clock = FakeClock(T0)
    e = Engine(store=store, settings=EngineSettings(horizon_s=300, load_interval_s=3600), clock=clock)
    await e.start(); ops = Operations(e, store)
    try:
        [n] = await create(ops, [spec(deliver_at_ms=T0 + 400_000)])
        clock.advance(200_000)                       # it now falls inside the horizon
        busy = threading.Event(); store._write(lambda c: busy.wait(5))
        load = asyncio.create_task(e.load())         # the loader's read is queued...
        await asyncio.sleep(0)
        upd = asyncio.create_task(ops.update(n.id, {"schedule"}, spec(trigger_key="later")))  # ...then the update
        await asyncio.sleep(0.05)
        busy.set(); await load; await upd
        stored = await store.get(n.id)
        mine = e.held(n.id)
        assert mine is None, f"store: {stored.state.name}; memory: {mine.state.name} due {mine.due_ms - T0} ms -> fires with the old spec"
    finally:
        await e.stop(); await store.close()
