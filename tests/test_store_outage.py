"""A store outage delays result commits but never drops one: nothing is granted twice."""

import asyncio
import time

from notifyagent.scheduler.engine.core import Engine, EngineSettings, ResultIn
from notifyagent.scheduler.engine.errors import Unavailable
from notifyagent.scheduler.engine.model import State
from notifyagent.scheduler.engine.operations import Operations
from notifyagent.scheduler.engine.retry import Outcome
from notifyagent.scheduler.store.sqlite import SqliteStore
from support import create, granted_leases, spec


class FlakyStore(SqliteStore):
    """Fails the next `failures` result commits, as a restarting PostgreSQL would."""

    failures = 0

    async def save_results(self, writes, **kw):
        if self.failures:
            self.failures -= 1
            raise Unavailable("store commit failed: connection lost")
        return await super().save_results(writes, **kw)


async def test_results_that_fail_to_commit_are_committed_later_and_never_granted_again(tmp_path):
    store = FlakyStore(tmp_path / "s.db")
    await store.open()
    e = Engine(store=store, settings=EngineSettings(load_interval_s=0.05))
    await e.start()
    try:
        s = e.connect(dispatcher_id="d", version="", capacity=10, credit=10)
        [n] = await create(Operations(e, store), [spec()])
        await asyncio.sleep(0.05)
        [lease] = granted_leases(s)
        store.failures = 4
        now = int(time.time() * 1000)
        done = asyncio.ensure_future(e.complete(s, [ResultIn(lease.lease_id, Outcome(200, True, ""), now, now)]))
        await asyncio.sleep(1.0)  # the loader runs many times meanwhile
        assert granted_leases(s) == [], "a notify whose result waits for the store is not granted again"
        await asyncio.wait_for(done, 10)
        stored = await store.get(n.id)
        assert stored.state == State.SUCCEEDED and len(stored.attempts) == 1
        await asyncio.sleep(0.2)
        assert granted_leases(s) == []
    finally:
        await e.stop()
        await store.close()
