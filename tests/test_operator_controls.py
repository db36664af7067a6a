"""What operators steer a running system with: drain a dispatcher or all of them, shut a
process down over AdminService, recycle workers by run time or idle time, and see each
process by role in `ps`."""

import asyncio
import re
import subprocess
import time

import grpc
import pytest

from notifyagent.v1 import admin_service_pb2 as admin, admin_service_pb2_grpc, notify_pb2 as pb
from support import Proc, System, free_port, open_channel, settings_for, wait_serving
from test_dispatcher_processes import Scheduler, scheduler, worker_pids  # noqa: F401 (the fixture)


@pytest.fixture
async def pair(tmp_path):
    s = System(settings_for(tmp_path), dispatchers=2)
    await s.start()
    yield s
    await s.stop()


def title_of(pid: int) -> str:
    return subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()


async def test_draining_one_dispatcher_sends_all_new_work_to_the_other_and_status_shows_it(pair, target):
    first, second = (d.client.dispatcher_id for d in pair.dispatchers)
    resp = await pair.admin.DrainDispatchers(admin.DrainDispatchersRequest(dispatcher_id=first))
    assert list(resp.dispatcher_ids) == [first]
    status = await pair.admin.GetStatus(admin.GetStatusRequest())
    assert {d.dispatcher_id: d.draining for d in status.dispatchers} == {first: True, second: False}
    ids = [(await pair.create(target.url(f"/d{i}"))).id for i in range(12)]
    for i in ids:
        done = await pair.wait_state(i, pb.STATE_SUCCEEDED)
        assert done.attempts[0].dispatcher_id == second


async def test_draining_all_dispatchers_holds_new_work_until_one_connects(pair, target):
    resp = await pair.admin.DrainDispatchers(admin.DrainDispatchersRequest())
    assert len(resp.dispatcher_ids) == 2
    n = await pair.create(target.url())
    await asyncio.sleep(0.5)
    assert (await pair.get(n.id)).state == pb.STATE_PENDING and target.received == []
    status = await pair.admin.GetStatus(admin.GetStatusRequest())
    assert all(d.draining for d in status.dispatchers) and not status.shutting_down


async def test_draining_an_unknown_or_oversized_dispatcher_id_is_refused(pair):
    with pytest.raises(grpc.RpcError) as e:
        await pair.admin.DrainDispatchers(admin.DrainDispatchersRequest(dispatcher_id="nobody"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    for bad in ("x" * 257, "\x00" * 300, "é" * 1000):
        with pytest.raises(grpc.RpcError) as e:
            await pair.admin.DrainDispatchers(admin.DrainDispatchersRequest(dispatcher_id=bad))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = await pair.admin.GetStatus(admin.GetStatusRequest())
    assert not any(d.draining for d in status.dispatchers), "nothing changed"


async def test_shutdown_over_admin_service_finishes_the_call_in_flight_then_exits(tmp_path, target):
    target.respond("/slow", (200, 1.5))
    port = free_port()
    proc = Proc(["dev", "--grpc-addr", f"127.0.0.1:{port}", "--http-addr", "", "--store", f"sqlite:///{tmp_path}/n.db"],
                log_path=tmp_path / "dev.log").start()  # fmt: skip
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=proc)
        async with open_channel(f"127.0.0.1:{port}") as channel:
            from notifyagent.v1 import notify_service_pb2 as api, notify_service_pb2_grpc

            stub = notify_service_pb2_grpc.NotifyServiceStub(channel)
            adm = admin_service_pb2_grpc.AdminServiceStub(channel)
            await stub.CreateNotify(api.CreateNotifyRequest(notify=pb.Notify(request=pb.HttpRequest(url=target.url("/slow")))))
            await target.wait_for(1)
            await adm.Shutdown(admin.ShutdownRequest())
            status = await adm.GetStatus(admin.GetStatusRequest())
            assert status.shutting_down
        code = await asyncio.to_thread(proc.popen.wait, 20)
        assert code == 0, proc.log()
        assert "Shutdown asked over AdminService" in proc.log() and "scheduler stopped" in proc.log()
        assert "leases in flight" not in proc.log(), "the call in flight finished and was committed"
        assert len(target.received) == 1
    finally:
        proc.kill()


async def test_workers_are_recycled_by_run_time_and_titled_by_role_and_slot(tmp_path, target, scheduler):  # noqa: F811
    parent = scheduler.dispatcher(tmp_path, "parent", "--processes", "2", "--recycle-seconds", "1.5").start()
    try:
        deadline = time.monotonic() + 20
        while len(re.findall(r"recycling pid \d+ \(ran \d+ s, NOTIFY_RECYCLE_SECONDS=1.5\)", parent.log())) < 2:
            assert time.monotonic() < deadline, parent.log()
            await asyncio.sleep(0.05)
        assert title_of(parent.popen.pid) == "notifyagent dispatcher supervisor (2 workers)"
        titles = [title_of(pid) for pid in worker_pids(parent)[-2:]]
        assert any(re.match(rf"notifyagent dispatcher worker [01] \(supervisor {parent.popen.pid}\) dispatcher-", t) for t in titles), titles
        ids = await scheduler.create([target.url(f"/t{i}") for i in range(10)])
        await scheduler.wait_succeeded(ids)
        assert sorted(target.ids()) == sorted(ids)
        assert await asyncio.to_thread(parent.terminate) == 0, parent.log()
        assert "killed by" not in parent.log()
    finally:
        parent.kill()


async def test_an_idle_worker_is_recycled_but_not_one_with_a_call_running(tmp_path, target, scheduler):  # noqa: F811
    target.respond("/long", (200, 3.0))
    parent = scheduler.dispatcher(tmp_path, "parent", "--recycle-idle-seconds", "1").start()
    try:
        deadline = time.monotonic() + 20
        while not re.search(r"recycling pid \d+ \(idle \d+ s, NOTIFY_RECYCLE_IDLE_SECONDS=1\)", parent.log()):
            assert time.monotonic() < deadline, parent.log()
            await asyncio.sleep(0.05)
        await scheduler.wait_dispatchers(1, 20, parent)
        await asyncio.sleep(0.3)
        ids = await scheduler.create([target.url("/long")], timeout_s=10)
        await target.wait_for(1)
        busy = [d.dispatcher_id for d in await scheduler.dispatchers() if d.leases]
        await asyncio.sleep(2.0)  # the call runs 3 s: more than the idle limit
        still = [d.dispatcher_id for d in await scheduler.dispatchers() if d.leases]
        assert busy == still and busy, "the worker with a call running was not recycled"
        await scheduler.wait_succeeded(ids)
        assert len(target.received) == 1
    finally:
        await asyncio.to_thread(parent.terminate)
        parent.kill()
