"""SIGUSR1 restarts a process in place (the original NotifyAgent under daemontools): it
finishes what is in flight, executes itself again with the same pid, and nothing is lost
or sent twice. Process titles name the role."""

import asyncio
import collections
import os
import signal
import subprocess

import grpc

from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api, notify_service_pb2_grpc
from support import Proc, free_port, open_channel, wait_serving


async def create_many(addr, url, count):
    async with open_channel(addr) as channel:
        stub = notify_service_pb2_grpc.NotifyServiceStub(channel)
        reqs = [api.CreateNotifyRequest(notify=pb.Notify(request=pb.HttpRequest(url=url))) for _ in range(count)]
        resp = await stub.BatchCreateNotify(api.BatchCreateNotifyRequest(requests=reqs))
        return [n.id for n in resp.notifies]


def title_of(pid: int) -> str:
    return subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()


async def wait_log(proc: Proc, text: str, count: int = 1, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while proc.log().count(text) < count:
        assert proc.popen.poll() is None, f"process exited:\n{proc.log()}"
        assert asyncio.get_running_loop().time() < deadline, f"no {text!r} in the log:\n{proc.log()}"
        await asyncio.sleep(0.05)


async def test_sigusr1_under_load_restarts_each_role_in_place_and_delivers_every_notify_once(tmp_path, target):
    target.respond("/slow", (200, 0.3))
    port = free_port()
    addr = f"127.0.0.1:{port}"
    scheduler = Proc(["scheduler", "--grpc-addr", addr, "--http-addr", "", "--store", f"sqlite:///{tmp_path}/n.db", "--grace", "20"],
                     log_path=tmp_path / "scheduler.log").start()  # fmt: skip
    dispatcher = Proc(["dispatcher", "--registry", f"static:{addr}", "--http-addr", "", "--allow-networks", "127.0.0.0/8",
                       "--capacity", "16", "--grace", "20"], log_path=tmp_path / "dispatcher.log").start()  # fmt: skip
    try:
        await wait_serving(addr, proc=scheduler)
        await wait_log(dispatcher, "opening stream")
        assert title_of(scheduler.popen.pid).startswith(f"notifyagent scheduler {addr}")
        assert title_of(dispatcher.popen.pid).startswith("notifyagent dispatcher dispatcher-")
        ids = await create_many(addr, target.url("/slow"), 240)  # 16 at a time, 0.3 s each: about 4.5 s of work
        await target.wait_for(20)
        dispatcher.popen.send_signal(signal.SIGUSR1)  # 16 calls in flight
        await wait_log(dispatcher, "starting again in place")
        await wait_log(dispatcher, "opening stream", count=2)
        await target.wait_for(len(target.received) + 20)
        scheduler.popen.send_signal(signal.SIGUSR1)  # leases in flight on the dispatcher
        await wait_log(scheduler, "starting again in place")
        await wait_serving(addr, proc=scheduler)
        await target.wait_for(len(ids), timeout=60)
        await asyncio.sleep(0.5)  # anything sent twice would arrive by now
        sent = collections.Counter(target.ids())
        assert set(sent) == set(ids), "every notify delivered"
        assert [i for i, c in sent.items() if c > 1] == [], "none sent twice"
        assert scheduler.popen.poll() is None and dispatcher.popen.poll() is None, "same processes, still running"
        assert title_of(scheduler.popen.pid).startswith("notifyagent scheduler"), "same pid, the program ran again"
        assert "lease expired" not in scheduler.log() and "unacked" not in dispatcher.log()
    finally:
        dispatcher.terminate()
        scheduler.terminate()


async def test_sigusr1_to_dev_keeps_the_pid_and_serves_again(tmp_path, target):
    port = free_port()
    proc = Proc(["dev", "--grpc-addr", f"127.0.0.1:{port}", "--http-addr", "", "--store", f"sqlite:///{tmp_path}/n.db"],
                log_path=tmp_path / "dev.log").start()  # fmt: skip
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=proc)
        pid = proc.popen.pid
        proc.popen.send_signal(signal.SIGUSR1)
        await wait_log(proc, "starting again in place")
        await wait_log(proc, "NotifyAgent dev: gRPC on", count=2)
        await wait_serving(f"127.0.0.1:{port}", proc=proc)
        assert proc.popen.pid == pid and os.path.exists(f"/proc/{pid}")
        (nid,) = await create_many(f"127.0.0.1:{port}", target.url(), 1)
        assert [r.headers["Notify-Id"] for r in await target.wait_for(1)] == [nid]
    finally:
        assert proc.terminate() == 0


async def test_sigusr1_to_a_worker_or_its_supervisor_restarts_it_in_place(tmp_path, target):
    import re

    port = free_port()
    addr = f"127.0.0.1:{port}"
    scheduler = Proc(["scheduler", "--grpc-addr", addr, "--http-addr", "", "--store", f"sqlite:///{tmp_path}/n.db"],
                     log_path=tmp_path / "scheduler.log").start()  # fmt: skip
    parent = Proc(["dispatcher", "--registry", f"static:{addr}", "--http-addr", "", "--allow-networks", "127.0.0.0/8",
                   "--processes", "2"], log_path=tmp_path / "parent.log").start()  # fmt: skip
    try:
        await wait_serving(addr, proc=scheduler)
        await wait_log(parent, "connected as", count=2)
        worker = int(re.findall(r"worker 0 started \(pid (\d+)\)", parent.log())[0])
        os.kill(worker, signal.SIGUSR1)
        await wait_log(parent, "connected as", count=3)  # the same worker, connected again after exec
        assert os.path.exists(f"/proc/{worker}") and title_of(worker).startswith("notifyagent dispatcher worker 0")
        assert "starting another" not in parent.log(), "the supervisor saw no worker die"
        ids = await create_many(addr, target.url(), 20)
        await target.wait_for(20)
        parent.popen.send_signal(signal.SIGUSR1)
        await wait_log(parent, "starting again in place")
        await wait_log(parent, "connected as", count=5)  # two fresh workers under the same parent pid
        assert title_of(parent.popen.pid).startswith("notifyagent dispatcher supervisor")
        ids += await create_many(addr, target.url(), 20)
        await target.wait_for(40)
        await asyncio.sleep(0.3)
        assert sorted(target.ids()) == sorted(ids)
    finally:
        parent.terminate()
        scheduler.terminate()
