"""A bound on notifies held in memory (NOTIFY_MAX_IN_MEMORY): beyond it due work waits in
the store and is paged in as room frees; order and delivery are unchanged."""

import asyncio
import os
import time

import pytest

from notifyagent.scheduler.engine.core import Engine, EngineSettings, ResultIn
from notifyagent.scheduler.engine.operations import Operations
from notifyagent.scheduler.engine.retry import Outcome
from notifyagent.scheduler.store.sqlite import SqliteStore
from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api, notify_service_pb2_grpc
from support import Proc, create, free_port, granted_leases, open_channel, spec, wait_serving


async def test_beyond_the_bound_due_work_waits_in_the_store_and_is_delivered_in_order_once(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    e = Engine(store=store, settings=EngineSettings(load_interval_s=0.05, load_batch=7, max_in_memory=100))
    await e.start()
    ops = Operations(e, store)
    try:
        ids = []
        for _ in range(10):  # due now, in creation order; one ordering key keeps them FIFO
            ids += [n.id for n in await create(ops, [spec(ordering_key="k") for _ in range(50)], batch=True)]
        await asyncio.sleep(0.3)
        assert e.snapshot().held <= 100, "memory holds at most the bound"
        s = e.connect(dispatcher_id="d", version="", capacity=20, credit=20)
        delivered = []
        deadline = time.monotonic() + 30
        while len(delivered) < len(ids):
            assert time.monotonic() < deadline, f"{len(delivered)} of {len(ids)} delivered"
            await asyncio.sleep(0.01)
            leases = granted_leases(s)
            if not leases:
                continue
            assert e.snapshot().held <= 100
            now = int(time.time() * 1000)
            delivered += [lease.notify.id for lease in leases]
            await e.complete(s, [ResultIn(lease.lease_id, Outcome(200, True, ""), now, now) for lease in leases])
            e.add_credit(s, len(leases))
        assert delivered == ids, "every notify once, in due order"
    finally:
        await e.stop()
        await store.close()


async def test_creates_beyond_the_bound_are_committed_and_paged_in(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    e = Engine(store=store, settings=EngineSettings(load_interval_s=0.05, max_in_memory=100))
    await e.start()
    ops = Operations(e, store)
    try:
        ids = [n.id for n in await create(ops, [spec() for _ in range(300)], batch=True)]
        assert e.snapshot().held == 100
        s = e.connect(dispatcher_id="d", version="", capacity=300, credit=300)
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 300:
            assert time.monotonic() < deadline, f"{len(got)} of 300 granted"
            await asyncio.sleep(0.01)
            leases = granted_leases(s)
            now = int(time.time() * 1000)
            got += [lease.notify.id for lease in leases]
            if leases:
                await e.complete(s, [ResultIn(lease.lease_id, Outcome(200, True, ""), now, now) for lease in leases])
        assert sorted(got) == sorted(ids) and len(set(got)) == 300
    finally:
        await e.stop()
        await store.close()


COUNT = 200_000 if os.environ.get("NOTIFY_SOAK") == "full" else 30_000
BOUND = 5_000


@pytest.mark.timeout(900)
async def test_due_notifies_with_no_dispatcher_keep_rss_bounded_and_are_all_delivered_once_one_connects(tmp_path, target, capsys):
    """A real scheduler process with NOTIFY_MAX_IN_MEMORY=5000: COUNT due notifies (200,000 with
    NOTIFY_SOAK=full) and no dispatcher; its memory stops growing at the bound; then a
    dispatcher process connects and every notify is delivered once."""
    port = free_port()
    scheduler = Proc(["scheduler", "--grpc-addr", f"127.0.0.1:{port}", "--http-addr", "", "--store",
                      f"sqlite:///{tmp_path}/n.db?synchronous=NORMAL"], log_path=tmp_path / "scheduler.log",
                     env={"NOTIFY_MAX_IN_MEMORY": str(BOUND)}).start()  # fmt: skip
    dispatcher = None
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=scheduler)
        rss = {}
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = notify_service_pb2_grpc.NotifyServiceStub(channel)
            request = api.CreateNotifyRequest(notify=pb.Notify(request=pb.HttpRequest(method=pb.HTTP_METHOD_GET, url=target.url())))
            for start in range(0, COUNT, 1000):
                await stub.BatchCreateNotify(api.BatchCreateNotifyRequest(requests=[request] * 1000), timeout=60)
                if start + 1000 == 2 * BOUND:  # memory is full: from here on due work stays in the store
                    await asyncio.sleep(1.5)
                    rss["full"] = rss_mb(scheduler.popen.pid)
        await asyncio.sleep(1.5)
        rss["end"] = rss_mb(scheduler.popen.pid)
        dispatcher = Proc(["dispatcher", "--registry", f"static:127.0.0.1:{port}", "--http-addr", "",
                           "--allow-networks", "127.0.0.0/8", "--capacity", "256"], log_path=tmp_path / "dispatcher.log").start()  # fmt: skip
        started = time.monotonic()
        await target.wait_for(COUNT, timeout=800)
        await asyncio.sleep(1.0)
        delivered = target.ids()
        with capsys.disabled():
            print(f"\nMEMORY notifies={COUNT} bound={BOUND} scheduler_rss_mb full={rss['full']:.0f} end={rss['end']:.0f}"
                  f" delivered={len(delivered)} in {time.monotonic() - started:.0f} s")  # fmt: skip
        assert len(delivered) == COUNT and len(set(delivered)) == COUNT, "every notify delivered once"
        assert rss["end"] - rss["full"] < 40, "beyond the bound, due work waits in the store, not in memory"
    finally:
        if dispatcher:
            dispatcher.terminate()
        scheduler.terminate()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))



async def test_a_created_notify_weighs_in_memory_what_its_stored_form_weighs(tmp_path):
    """The create path hands admit() the size it checked: each notify of a batch counts
    against the bound what units() makes of its spec (the loader's figure), in its own place."""
    from notifyagent.scheduler.api import convert
    from notifyagent.scheduler.engine.memory import units
    from notifyagent.scheduler.engine.model import Notification, State

    now = int(time.time() * 1000)
    bodies = [b"x" * 200_000, b"y" * 50_000, b"z" * 9_000, b""]
    messages = [pb.Notify(request=pb.HttpRequest(method=pb.HTTP_METHOD_POST, url="https://example.com/h", body=body))
                for body in bodies]  # fmt: skip
    weights = [units(Notification("x", convert.new_notify(m, "", now_ms=now, created_by="svc").spec, State.PENDING, now))
               for m in messages]  # fmt: skip
    assert weights[0] > weights[1] > weights[2] > weights[3] == 1
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    # room for the first two only: the third and fourth stay in the store
    e = Engine(store=store, settings=EngineSettings(load_interval_s=60, max_in_memory=weights[0] + weights[1]))
    await e.start()
    ops = Operations(e, store)
    try:
        await ops.create_incoming([convert.incoming(m, "", now_ms=now, created_by="svc") for m in messages], batch=True)
        assert e.snapshot().held == 2
    finally:
        await e.stop()
        await store.close()
