"""`dev` runs its dispatcher in-process over the same lease protocol: its Lease stream to its
own scheduler is carried in memory (local_lease.py) through the scheduler's Lease handler.
The lease-protocol behaviours of a real client hold for it as for a dispatcher over gRPC;
the tests imported below run here against `dev` (this module's `system`)."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.protobuf import duration_pb2
from notifyagent.dev import DevApp
from notifyagent.local_lease import LocalLeaseCall
from notifyagent.registry import MemoryRegistry
from notifyagent.v1 import admin_service_pb2 as admin, dispatch_service_pb2 as dpb, notify_pb2 as pb
from support import DevSystem, Trust, settings_for
from test_delivery import (  # noqa: F401  (run here against dev)
    test_cancel_while_delivering_revokes_the_call,
    test_per_attempt_timeout_ends_the_attempt,
    test_status_reports_counts_and_connected_dispatchers,
)
from test_lease_protocol import (  # noqa: F401  (run here against dev)
    test_real_client_reconnects_after_a_broken_stream_and_reports_the_live_lease,
    test_real_client_reopens_a_stream_whose_call_was_cancelled,
)


@pytest.fixture
async def system(tmp_path):
    s = DevSystem(settings_for(tmp_path))
    await s.start()
    yield s
    await s.stop()


async def test_devs_dispatcher_streams_in_memory_and_is_listed_like_any_other(system, target):
    (client,) = system.dispatchers[0].client.streams
    assert isinstance(client._call, LocalLeaseCall)
    status = await system.admin.GetStatus(admin.GetStatusRequest())
    assert [d.dispatcher_id for d in status.dispatchers] == [client.dispatcher_id]
    n = await system.create(target.url("/x"))
    done = await system.wait_state(n.id, pb.STATE_SUCCEEDED)
    assert done.attempts[0].dispatcher_id == client.dispatcher_id


async def test_draining_devs_dispatcher_holds_new_work(system, target):
    await system.admin.DrainDispatchers(admin.DrainDispatchersRequest())
    n = await system.create(target.url())
    await asyncio.sleep(0.5)
    assert (await system.get(n.id)).state == pb.STATE_PENDING and target.received == []
    status = await system.admin.GetStatus(admin.GetStatusRequest())
    assert [d.draining for d in status.dispatchers] == [True]


async def test_stopping_dev_finishes_the_call_in_flight_and_records_it(tmp_path, target):
    target.respond("/slow", (200, 0.5))
    s = DevSystem(settings_for(tmp_path, grace=5.0))
    await s.start()
    try:
        n = await s.create(target.url("/slow"))
        await target.wait_for(1)
    finally:
        await s.stop()
    again = DevSystem(settings_for(tmp_path))
    await again.start()
    try:
        done = await again.get(n.id)
        assert done.state == pb.STATE_SUCCEEDED and len(done.attempts) == 1
    finally:
        await again.stop()


async def test_a_call_cut_off_by_stop_is_handed_back_its_lease_expires_and_counts_as_failed(tmp_path, target):
    target.respond("/slow", (200, 5.0))
    s = DevSystem(settings_for(tmp_path, grace=0.2, lease_margin=0.3))
    await s.start()
    n = await s.create(target.url("/slow"), timeout=duration_pb2.Duration(nanos=800_000_000))
    await target.wait_for(1)
    await s.dev.dispatcher.stop()  # its call is cancelled, nothing is reported: the lease runs out
    deadline = time.monotonic() + 10
    while (got := await s.get(n.id)).state == pb.STATE_DELIVERING:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    try:
        assert got.state in (pb.STATE_RETRY_WAIT, pb.STATE_PENDING) and len(got.attempts) == 1
        assert not got.attempts[0].success and "lease" in got.attempts[0].error
    finally:
        await s.stop()


async def test_devs_own_dispatcher_is_authorized_by_its_internal_token(tmp_path, target):
    trust = Trust.make(tmp_path)
    s = DevSystem(settings_for(tmp_path, tokens_file=str(trust.tokens_file)), token=trust.tokens["client"])
    await s.start()
    try:
        (client,) = s.dispatchers[0].client.streams
        assert isinstance(client._call, LocalLeaseCall)
        n = await s.create(target.url("/auth"))
        await s.wait_state(n.id, pb.STATE_SUCCEEDED)
        sessions = [d.dispatcher_id for d in s.scheduler.engine.snapshot().dispatchers]
        assert sessions == [f"{client.dispatcher_id}@dev-dispatcher"], "the internal token's name qualifies its id"
    finally:
        await s.stop()


async def test_a_local_stream_with_a_token_that_may_not_lease_is_refused(tmp_path):
    trust = Trust.make(tmp_path)
    app = DevApp(settings_for(tmp_path, tokens_file=str(trust.tokens_file)), registry=MemoryRegistry())
    await app.scheduler.start()
    try:
        from notifyagent.common.auth import LEASE_METHOD, call_metadata
        from notifyagent.local_lease import local_transport

        s = app.scheduler
        open_call = local_transport(s.dispatch.Lease, lambda md: s.auth.authorize(md, LEASE_METHOD),
                                    call_metadata(trust.tokens["client"]), app.settings.max_message_bytes)  # fmt: skip
        async with open_call(s.registered_address) as call:
            await call.write(dpb.LeaseRequest(hello=dpb.DispatcherHello(dispatcher_id="d", capacity=1)))
            with pytest.raises(grpc.RpcError) as e:
                async for _ in call:
                    pass
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await app.scheduler.stop()
        await app.registry.close()


async def test_a_request_over_the_message_limit_is_refused_in_memory_as_over_grpc(tmp_path, target):
    from notifyagent.common.auth import LEASE_METHOD
    from notifyagent.common.grpcutil import message_options
    from notifyagent.dispatcher.stream import grpc_transport
    from notifyagent.local_lease import local_transport

    settings = settings_for(tmp_path)
    s = DevSystem(settings)
    await s.start()
    try:
        sched = s.scheduler
        limit = settings.max_message_bytes
        too_big = dpb.LeaseRequest(hello=dpb.DispatcherHello(dispatcher_id="d" * limit, capacity=1))
        assert too_big.ByteSize() > limit
        in_memory = local_transport(sched.dispatch.Lease, lambda md: sched.auth.authorize(md, LEASE_METHOD), (), limit)
        over_grpc = grpc_transport(lambda: None, (), message_options(limit))
        codes = []
        for open_call in (in_memory, over_grpc):
            async with open_call(sched.registered_address) as call:
                with pytest.raises(grpc.RpcError):
                    await call.write(too_big)  # over gRPC the write may say INTERNAL (grpc/grpc#36066)
                with pytest.raises(grpc.RpcError) as e:
                    async for _ in call:  # how the stream ended
                        pass
                codes.append(e.value.code())
        assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
        n = await s.create(target.url("/after"))  # the scheduler and dev's own stream go on
        await s.wait_state(n.id, pb.STATE_SUCCEEDED)
    finally:
        await s.stop()


async def test_a_local_streams_queues_are_bounded_and_keep_order():
    from notifyagent.common.auth import Principal
    from notifyagent.local_lease import QUEUE_MESSAGES

    produced, release = [], asyncio.Event()

    async def handler(requests, context):  # reads nothing until released, then answers each request
        await release.wait()
        async for req in requests:
            for i in range(3):
                produced.append(i)
                yield dpb.LeaseResponse(acked_lease_ids=[f"{req.hello.dispatcher_id}-{i}"])

    call = LocalLeaseCall(handler, lambda: Principal("t", frozenset({"dispatcher"})), 1 << 20)
    try:
        for i in range(QUEUE_MESSAGES):
            await call.write(dpb.LeaseRequest(hello=dpb.DispatcherHello(dispatcher_id=str(i))))
        blocked = asyncio.ensure_future(call.write(dpb.LeaseRequest(hello=dpb.DispatcherHello(dispatcher_id="last"))))
        await asyncio.sleep(0.1)
        assert not blocked.done(), "a full request queue holds its writer back"
        release.set()
        await asyncio.wait_for(blocked, 5)
        await asyncio.sleep(0.1)
        assert len(produced) <= QUEUE_MESSAGES + 3, "an unread response queue holds the handler back"
        await call.done_writing()
        got = [r.acked_lease_ids[0] async for r in call]
        names = [str(i) for i in range(QUEUE_MESSAGES)] + ["last"]
        assert got == [f"{n}-{i}" for n in names for i in range(3)]
    finally:
        await call.close()


async def test_a_local_stream_cancelled_before_it_starts_ends_as_a_cancelled_grpc_call_would():
    """LeaseClient.stop() may cancel the call before the stream's task ran once: it must end
    (CANCELLED), not leave its reader and initial_metadata() waiting for ever."""
    import grpc
    from notifyagent.common import auth
    from notifyagent.local_lease import LocalLeaseCall

    async def handler(requests, context):
        yield None  # never reached

    call = LocalLeaseCall(handler, lambda: auth.Principal("dev", frozenset()), 1 << 20)
    call.cancel()
    await asyncio.wait_for(call.initial_metadata(), 2)
    with pytest.raises(grpc.RpcError) as got:
        await asyncio.wait_for(anext(aiter(call)), 2)
    assert got.value.code() == grpc.StatusCode.CANCELLED
