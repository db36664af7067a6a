"""Any scheduler answers every RPC: two schedulers in this process share one PostgreSQL
schema, one dispatcher streams from both. Creates for another owner's ordering key,
Cancel, Update and Retry are forwarded to the owner; Trigger and CancelGroup fan out
and answer the total; request_id holds across schedulers; status adds up; a drain
reaches every scheduler."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest
from google.protobuf import field_mask_pb2
from notifyagent.common.ids import partition_for_key, partition_of
from notifyagent.dispatcher.app import DispatcherApp
from notifyagent.registry import MemoryRegistry
from notifyagent.scheduler.app import SchedulerApp
from notifyagent.v1 import admin_service_pb2 as admin, admin_service_pb2_grpc
from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api, notify_service_pb2_grpc
from support import settings_for
from test_store_contract import PG_DSN, postgres_admin

pytestmark = pytest.mark.postgres
P = 8


@pytest.fixture
async def pair(tmp_path, target):
    conn = await postgres_admin()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    dsn = f"{PG_DSN}{'&' if '?' in PG_DSN else '?'}search_path={schema}"
    settings = settings_for(tmp_path, store=dsn, partitions=P, ownership_ttl=2.0)
    reg = MemoryRegistry()
    apps = [SchedulerApp(settings, registry=reg) for _ in range(2)]
    for app in apps:
        await app.start()
    deadline = time.monotonic() + 20
    while not all(len(a.ownership.fence.held()) == P // 2 for a in apps):
        assert time.monotonic() < deadline, [a.ownership.fence.held() for a in apps]
        await asyncio.sleep(0.1)
    d = DispatcherApp(settings, registry=reg)
    await d.start()
    deadline = time.monotonic() + 10
    while len(d.client.schedulers()) < 2 or not all(c.connected for c in d.client.streams):
        assert time.monotonic() < deadline, "the dispatcher streams from both schedulers"
        await asyncio.sleep(0.05)
    channels = [grpc.aio.insecure_channel(a.address) for a in apps]
    stubs = [notify_service_pb2_grpc.NotifyServiceStub(c) for c in channels]
    admins = [admin_service_pb2_grpc.AdminServiceStub(c) for c in channels]
    yield apps, stubs, admins, d
    await d.stop()
    for app in apps:
        await app.stop()
    for c in channels:
        await c.close()
    await reg.close()
    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    await conn.close()


def key_owned_by(app: SchedulerApp) -> str:
    held = app.ownership.fence.held()
    return next(k for k in (f"key-{i}" for i in range(1000)) if partition_for_key(k, P) in held)


def req(url: str, **fields) -> api.CreateNotifyRequest:
    request_id = fields.pop("request_id", "")
    return api.CreateNotifyRequest(notify=pb.Notify(request=pb.HttpRequest(method=pb.HTTP_METHOD_POST, url=url), **fields),
                                   request_id=request_id)  # fmt: skip


async def wait_state(stub, notify_id: str, state: int, timeout: float = 10) -> pb.Notify:
    deadline = time.monotonic() + timeout
    while True:
        n = (await stub.GetNotify(api.GetNotifyRequest(id=notify_id))).notify
        if n.state == state:
            return n
        assert time.monotonic() < deadline, f"{notify_id} is {pb.State.Name(n.state)}"
        await asyncio.sleep(0.05)


async def test_an_ordering_key_owned_elsewhere_is_created_by_its_owner(pair, target):
    (s0, s1), (a0, a1), _, _ = pair
    key = key_owned_by(s1)
    n = (await a0.CreateNotify(req(target.url("/k"), ordering_key=key))).notify
    assert partition_of(n.id, P) == partition_for_key(key, P) and s1.ownership.fence.holds(partition_of(n.id, P))
    await wait_state(a0, n.id, pb.STATE_SUCCEEDED)
    mine = (await a0.CreateNotify(req(target.url("/k")))).notify
    assert s0.ownership.fence.holds(partition_of(mine.id, P)), "without a key: a partition the receiving scheduler owns"


async def test_cancel_update_and_retry_are_forwarded_to_the_owner(pair, target):
    (s0, s1), (a0, a1), _, _ = pair
    key = key_owned_by(s1)
    later = req(target.url("/later"), ordering_key=key)
    later.notify.delay.FromSeconds(60)
    n = (await a1.CreateNotify(later)).notify
    changed = pb.Notify(id=n.id, labels={"moved": "yes"})
    updated = (await a0.UpdateNotify(api.UpdateNotifyRequest(notify=changed, update_mask=field_mask_pb2.FieldMask(paths=["labels"])))).notify
    assert updated.labels == {"moved": "yes"}
    cancelled = (await a0.CancelNotify(api.CancelNotifyRequest(id=n.id))).notify
    assert cancelled.state == pb.STATE_CANCELLED
    with pytest.raises(grpc.aio.AioRpcError) as e:  # the owner's error comes back as is
        await a0.CancelNotify(api.CancelNotifyRequest(id=n.id))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    retried = (await a0.RetryNotify(api.RetryNotifyRequest(id=n.id))).notify
    assert retried.state in (pb.STATE_PENDING, pb.STATE_DELIVERING, pb.STATE_SUCCEEDED)
    await wait_state(a0, n.id, pb.STATE_SUCCEEDED)


async def test_trigger_fans_out_and_answers_the_total(pair, target):
    (s0, s1), (a0, a1), _, _ = pair
    ids = []
    for stub in (a0, a1, a0, a1, a0, a1):
        ids.append((await stub.CreateNotify(req(target.url("/t"), trigger_key="go"))).notify.id)
    assert {s0.ownership.fence.holds(partition_of(i, P)) for i in ids} == {True, False}
    assert (await a0.Trigger(api.TriggerRequest(trigger_key="go"))).triggered == 6
    for i in ids:
        await wait_state(a1, i, pb.STATE_SUCCEEDED)


async def test_one_request_id_through_two_schedulers_is_one_notify(pair, target):
    (s0, s1), (a0, a1), _, _ = pair
    first = (await a0.CreateNotify(req(target.url("/once"), request_id="same"))).notify
    second = (await a1.CreateNotify(req(target.url("/once"), request_id="same"))).notify
    assert first.id == second.id
    await target.wait_for(1)
    await asyncio.sleep(0.3)
    assert [r.path for r in target.received].count("/once") == 1


async def test_a_batch_is_split_by_owner_and_keeps_its_order(pair, target):
    (s0, s1), (a0, a1), _, _ = pair
    k0, k1 = key_owned_by(s0), key_owned_by(s1)
    batch = api.BatchCreateNotifyRequest(requests=[
        req(target.url("/b/0"), ordering_key=k1), req(target.url("/b/1")), req(target.url("/b/2"), ordering_key=k0),
        req(target.url("/b/3"), ordering_key=k1),
    ])  # fmt: skip
    got = (await a0.BatchCreateNotify(batch)).notifies
    assert [n.request.url.rsplit("/", 1)[1] for n in got] == ["0", "1", "2", "3"]
    assert [partition_of(n.id, P) for n in got][0] == partition_for_key(k1, P)
    for n in got:
        await wait_state(a0, n.id, pb.STATE_SUCCEEDED)


async def test_cancel_group_reaches_members_in_every_partition(pair, target):
    (s0, s1), (a0, a1), _, _ = pair
    for stub in (a0, a1):
        reqs = []
        for i in range(4):
            r = req(target.url("/g"))
            r.notify.delay.FromSeconds(60)
            reqs.append(r)
        await stub.BatchCreateNotify(api.BatchCreateNotifyRequest(requests=reqs, group_key="fan"))
    resp = await a0.CancelGroup(api.CancelGroupRequest(group_key="fan"))
    assert resp.cancelled == 8


async def test_status_adds_up_over_the_schedulers(pair, target):
    (s0, s1), (a0, a1), (m0, m1), d = pair
    for stub in (a0, a1):
        for _ in range(3):
            n = (await stub.CreateNotify(req(target.url("/s")))).notify
            await wait_state(stub, n.id, pb.STATE_SUCCEEDED)
    status = await m0.GetStatus(admin.GetStatusRequest())
    assert status.sent_ok == 6
    assert [x.dispatcher_id for x in status.dispatchers] == [d.client.dispatcher_id] * 2, "one session on each scheduler"
    rows = {r.address: r for r in status.schedulers}
    assert list(rows) == [s0.address, s1.address], "one row per scheduler, the one answering first"
    for app in (s0, s1):
        row = rows[app.address]
        assert row.owner_id == app.ownership.owner_id and list(row.partitions) == sorted(app.ownership.fence.held())
        assert row.sent_ok == 3 and row.dispatchers == 1
    assert sorted(p for r in status.schedulers for p in r.partitions) == list(range(P))


async def test_a_queue_paused_through_one_scheduler_is_paused_on_every_one(pair, target):
    (s0, s1), (a0, a1), (m0, m1), _ = pair
    await m0.PauseQueue(admin.PauseQueueRequest(name="slow"))
    deadline = time.monotonic() + 5
    while not s1.engine.queue_config("slow").paused:
        assert time.monotonic() < deadline, "the other scheduler reads the stored pause"
        await asyncio.sleep(0.05)
    ids = []
    for stub in (a0, a1):
        ids.append((await stub.CreateNotify(req(target.url("/paused"), queue="slow"))).notify.id)
    await asyncio.sleep(0.5)
    assert not [r for r in target.received if r.path == "/paused"]
    await m1.ResumeQueue(admin.ResumeQueueRequest(name="slow"))
    for i in ids:
        await wait_state(a0, i, pb.STATE_SUCCEEDED)


async def test_a_pause_and_limits_through_two_schedulers_at_once_both_hold(pair, target):
    (s0, s1), _, (m0, m1), _ = pair
    await m0.PauseQueue(admin.PauseQueueRequest(name="both"))
    got = await m1.SetQueueLimits(admin.SetQueueLimitsRequest(name="both", max_concurrent=3))  # s1 knows of no pause yet
    assert got.queue.paused and got.queue.max_concurrent == 3, "s1 answers the queue as stored"
    deadline = time.monotonic() + 5
    while s0.engine.queue_config("both").max_concurrent != 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert s0.engine.queue_config("both").paused and s1.engine.queue_config("both").paused


async def test_queue_limits_are_shared_among_the_live_schedulers(pair, target):
    (s0, s1), _, (m0, _), _ = pair
    await m0.SetQueueLimits(admin.SetQueueLimitsRequest(name="capped", max_concurrent=4, rate=10, burst=4))
    deadline = time.monotonic() + 5
    while s1.engine.queue_config("capped").max_concurrent != 4:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    reqs = [req(target.url("/capped"), queue="capped") for _ in range(8)]
    target.respond("/capped", (200, 0.5))
    await s0.engine.refresh_queues(2)  # both know two schedulers are live (their loops do this each second)
    await s1.engine.refresh_queues(2)
    for stub in pair[1]:
        await stub.BatchCreateNotify(api.BatchCreateNotifyRequest(requests=reqs[:4]))
    await target.wait_for(4)
    await asyncio.sleep(0.3)
    assert target.peak_by_path["/capped"] <= 4, "2 at once on each scheduler"


async def test_drain_dispatchers_through_one_scheduler_drains_them_on_every_one(pair, target):
    (s0, s1), (a0, a1), (m0, m1), d = pair
    with pytest.raises(grpc.RpcError) as e:
        await m0.DrainDispatchers(admin.DrainDispatchersRequest(dispatcher_id="nobody"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND, "connected to no scheduler: not found"
    told = await m0.DrainDispatchers(admin.DrainDispatchersRequest(dispatcher_id=d.client.dispatcher_id))
    assert list(told.dispatcher_ids) == [d.client.dispatcher_id], "named once, however many schedulers it streams from"
    for app in (s0, s1):
        assert [x.draining for x in app.engine.snapshot().dispatchers] == [True], "every scheduler stops granting to it"
    status = await m1.GetStatus(admin.GetStatusRequest())
    assert [x.draining for x in status.dispatchers] == [True, True]
    ids = [(await stub.CreateNotify(req(target.url("/drained")))).notify.id for stub in (a0, a1) for _ in range(4)]
    await asyncio.sleep(0.5)
    assert not [r for r in target.received if r.path == "/drained"], "neither scheduler grants to a drained dispatcher"
    assert {(await a0.GetNotify(api.GetNotifyRequest(id=i))).notify.state for i in ids} == {pb.STATE_PENDING}


async def test_a_dispatcher_gives_a_listed_scheduler_that_is_down_no_share(tmp_path, target):
    from notifyagent.registry.static import StaticRegistry
    from support import System

    system = System(settings_for(tmp_path), dispatchers=0)
    await system.start()
    d = DispatcherApp(settings_for(tmp_path, capacity=64), registry=StaticRegistry([system.scheduler.address, "127.0.0.1:9"]))
    await d.start()
    try:
        deadline = time.monotonic() + 15
        while sorted((c.capacity, c.connected) for c in d.client.streams) != [(64, False), (64, True)]:
            assert time.monotonic() < deadline, [(c.capacity, c.connected) for c in d.client.streams]
            await asyncio.sleep(0.1)
        n = await system.create(target.url("/up"))
        await system.wait_state(n.id, pb.STATE_SUCCEEDED)
    finally:
        await d.stop()
        await system.stop()
