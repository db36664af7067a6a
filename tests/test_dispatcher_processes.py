"""Dispatchers as real processes next to a real scheduler process: graceful SIGTERM with
calls in flight, and `--processes N` (restart after SIGKILL, recycling, stop)."""

import asyncio
import os
import re
import signal
import time

import grpc
import pytest

from notifyagent.dispatcher.supervisor import describe_exit, rss_mb
from notifyagent.v1 import admin_service_pb2, admin_service_pb2_grpc, notify_pb2 as pb, notify_service_pb2 as api, notify_service_pb2_grpc
from support import Proc, free_port, wait_serving, open_channel


@pytest.fixture
async def scheduler(tmp_path):
    port = free_port()
    proc = Proc(["scheduler", "--grpc-addr", f"127.0.0.1:{port}", "--http-addr", "", "--store", f"sqlite:///{tmp_path}/n.db",
                 "--lease-margin", "2"], log_path=tmp_path / "scheduler.log").start()  # fmt: skip
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=proc)
        async with open_channel(f"127.0.0.1:{port}") as channel:
            yield Scheduler(port, proc, channel)
    finally:
        await asyncio.to_thread(proc.terminate)


class Scheduler:
    def __init__(self, port, proc, channel):
        self.port, self.proc = port, proc
        self.api = notify_service_pb2_grpc.NotifyServiceStub(channel)
        self.admin = admin_service_pb2_grpc.AdminServiceStub(channel)

    def dispatcher(self, tmp_path, name, *extra):
        return Proc(["dispatcher", "--registry", f"static:127.0.0.1:{self.port}", "--http-addr", "", "--allow-networks", "127.0.0.0/8",
                     "--grace", "10", *extra], log_path=tmp_path / f"{name}.log")  # fmt: skip

    async def create(self, urls, timeout_s=3.0):
        reqs = []
        for url in urls:
            n = pb.Notify(request=pb.HttpRequest(url=url))
            n.timeout.FromMilliseconds(int(timeout_s * 1000))
            reqs.append(api.CreateNotifyRequest(notify=n))
        resp = await self.api.BatchCreateNotify(api.BatchCreateNotifyRequest(requests=reqs))
        return [n.id for n in resp.notifies]

    async def get(self, notify_id):
        return (await self.api.GetNotify(api.GetNotifyRequest(id=notify_id))).notify

    async def dispatchers(self):
        return (await self.admin.GetStatus(admin_service_pb2.GetStatusRequest())).dispatchers

    async def wait_dispatchers(self, count, timeout=20.0, *procs):
        deadline = time.monotonic() + timeout
        while len(await self.dispatchers()) != count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(await self.dispatchers())} dispatchers, expected {count}:\n" + "\n".join(p.log() for p in procs))
            await asyncio.sleep(0.05)

    async def wait_succeeded(self, ids, timeout=20.0):
        deadline = time.monotonic() + timeout
        for notify_id in ids:
            while (n := await self.get(notify_id)).state != pb.STATE_SUCCEEDED:
                assert time.monotonic() < deadline, f"{notify_id} is {pb.State.Name(n.state)}"
                await asyncio.sleep(0.05)


def worker_pids(proc: Proc) -> list[int]:
    return [int(pid) for pid in re.findall(r"worker \d+ started \(pid (\d+)\)", proc.log())]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_sigterm_with_calls_in_flight_finishes_and_reports_them_and_nothing_is_sent_twice(tmp_path, target, scheduler):
    target.respond("/slow", (200, 1.0))
    first = scheduler.dispatcher(tmp_path, "first", "--capacity", "4").start()
    second = scheduler.dispatcher(tmp_path, "second", "--capacity", "4").start()
    try:
        await scheduler.wait_dispatchers(2, 20, first, second)
        first_id = next(d.dispatcher_id for d in await scheduler.dispatchers() if f"-{first.popen.pid}-" in d.dispatcher_id)
        ids = await scheduler.create([target.url("/slow")] * 16)
        await target.wait_for(8)  # both are busy: four calls each
        sigterm_at = time.time()
        code = await asyncio.to_thread(first.terminate)
        assert code == 0, first.log()
        assert time.time() - sigterm_at < 3, "it finished its calls (1 s) and left"
        await scheduler.wait_succeeded(ids)
        delivered = target.ids()
        assert sorted(delivered) == sorted(ids), "every notify delivered, none twice"
        by_first = [a for i in ids for a in (await scheduler.get(i)).attempts if a.dispatcher_id == first_id]
        assert len(by_first) >= 4 and all(a.success for a in by_first), "its calls in flight were reported"
        assert all(a.start_time.ToMilliseconds() / 1000 < sigterm_at for a in by_first), "no grant taken after SIGTERM"
        assert "stopped after" in first.log()
    finally:
        first.kill()
        second.kill()


async def test_a_worker_killed_with_sigkill_is_started_again_and_delivery_goes_on(tmp_path, target, scheduler):
    parent = scheduler.dispatcher(tmp_path, "parent", "--processes", "2", "--capacity", "4").start()
    try:
        await scheduler.wait_dispatchers(2, 20, parent)
        ids = await scheduler.create([target.url(f"/a{i}") for i in range(10)])
        await scheduler.wait_succeeded(ids)
        victim = worker_pids(parent)[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while len(worker_pids(parent)) < 3 or len(await scheduler.dispatchers()) != 2:
            assert time.monotonic() < deadline, parent.log()
            await asyncio.sleep(0.05)
        assert re.search(rf"worker \d \(pid {victim}\) killed by SIGKILL", parent.log())
        ids = await scheduler.create([target.url(f"/b{i}") for i in range(20)])
        await scheduler.wait_succeeded(ids)
        pids = worker_pids(parent)
        assert await asyncio.to_thread(parent.terminate) == 0, parent.log()
        assert not any(alive(pid) for pid in pids), "no worker outlives its supervisor"
    finally:
        parent.kill()


async def test_workers_are_recycled_after_their_calls_and_every_notify_is_delivered_exactly_once(tmp_path, target, scheduler):
    target.respond("/r", (200, 0.2))
    parent = scheduler.dispatcher(tmp_path, "parent", "--processes", "2", "--capacity", "3", "--recycle-calls", "20").start()
    try:
        await scheduler.wait_dispatchers(2, 20, parent)
        ids = await scheduler.create([target.url("/r")] * 100)
        await scheduler.wait_succeeded(ids, timeout=40)
        # A recycle is logged once its replacement is ready; on a loaded machine the old worker may
        # deliver the rest first, so the second recycle can come after the last notify succeeded.
        deadline = time.monotonic() + 30
        while len(recycled := re.findall(r"recycling pid (\d+) \(\d+ calls", parent.log())) < 2:
            assert time.monotonic() < deadline, "both workers are recycled after 20 calls:\n" + parent.log()
            await asyncio.sleep(0.05)
        deadline = time.monotonic() + 10
        while not all(re.search(rf"\(pid {pid}\) exited with 0 after \d+ calls", parent.log()) for pid in recycled):
            assert time.monotonic() < deadline, "every recycled worker stops gracefully:\n" + parent.log()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert sorted(target.ids()) == sorted(ids), "every notify delivered exactly once"
        assert "killed by" not in parent.log() and "starting another" not in parent.log(), "no worker died"
        pids = worker_pids(parent)
        assert await asyncio.to_thread(parent.terminate) == 0, parent.log()
        assert not any(alive(pid) for pid in pids)
    finally:
        parent.kill()


def test_resident_memory_is_read_from_proc_and_exits_are_described():
    assert 5 < rss_mb(os.getpid()) < 4096
    assert rss_mb(2**22 + 12345) is None
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL" and describe_exit(3) == "exited with 3"


async def test_a_worker_above_the_memory_limit_is_recycled_and_delivery_goes_on(tmp_path, target, scheduler):
    parent = scheduler.dispatcher(tmp_path, "parent", "--recycle-memory-mb", "1").start()  # every worker is above 1 MiB
    try:
        deadline = time.monotonic() + 20
        while not re.search(r"recycling pid \d+ \(\d+ MiB resident, NOTIFY_RECYCLE_MEMORY_MB=1\)", parent.log()):
            assert time.monotonic() < deadline, parent.log()
            await asyncio.sleep(0.05)
        ids = await scheduler.create([target.url(f"/m{i}") for i in range(10)])
        await scheduler.wait_succeeded(ids)
        assert await asyncio.to_thread(parent.terminate) == 0, parent.log()
        assert "killed by" not in parent.log()
    finally:
        parent.kill()
