"""Engine logic with the store underneath and no servers: loading, paging, restarts
(the in-memory store and a fake clock)."""

from notifyagent.scheduler.engine.core import Engine, EngineSettings
from notifyagent.scheduler.engine.model import Notification, Request, Spec, State
from notifyagent.scheduler.store.memory import MemoryStore
from support import FakeClock


def pending(i: int, due_ms: int, state: State = State.PENDING) -> Notification:
    spec = Spec(request=Request(method="POST", url=f"http://127.0.0.1:9/{i}"))
    return Notification(id=f"N{i:05d}", spec=spec, state=state, create_ms=0, due_ms=due_ms)


async def test_loader_pages_through_many_due_notifies_without_skipping_page_boundaries():
    store = MemoryStore()
    await store.open()
    await store.insert([pending(i, 1_000 + i % 3) for i in range(25)])
    await store.insert([pending(100 + i, 60_000 + i, State.SCHEDULED) for i in range(7)])  # within the horizon
    await store.insert([pending(200, 10_000_000, State.SCHEDULED)])  # beyond it
    engine = Engine(store=store, settings=EngineSettings(load_batch=4, horizon_s=300), clock=FakeClock(5_000))
    await engine.start()
    try:
        snap = engine.snapshot()
        assert snap.ready == 25, "every due one is ready, including each page's last"
        assert snap.held == 32 and engine.held("N00200") is None
    finally:
        await engine.stop()
        await store.close()
