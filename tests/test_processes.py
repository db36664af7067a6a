"""The real `notifyagent` processes: crash recovery with SIGKILL, graceful SIGTERM,
scheduler and dispatcher apart, and the CLI verbs as the README shows them."""

import asyncio
import json
import subprocess
import sys

import grpc

from notifyagent.v1 import admin_service_pb2, admin_service_pb2_grpc, notify_pb2 as pb, notify_service_pb2 as api, notify_service_pb2_grpc
from support import Proc, cli_env, free_port, open_channel, wait_serving, wait_until


def dev(tmp_path, port, name="dev", *extra):
    return Proc(
        ["dev", "--grpc-addr", f"127.0.0.1:{port}", "--http-addr", "", "--store", f"sqlite:///{tmp_path}/n.db", *extra],
        log_path=tmp_path / f"{name}.log",
    )


async def create_delayed(addr, url, count, delay_ms_from, delay_ms_to):
    async with open_channel(addr) as channel:
        stub = notify_service_pb2_grpc.NotifyServiceStub(channel)
        ids = []
        step = (delay_ms_to - delay_ms_from) / count
        for start in range(0, count, 50):
            reqs = []
            for i in range(start, min(count, start + 50)):
                n = pb.Notify(request=pb.HttpRequest(url=url))
                n.delay.FromMilliseconds(int(delay_ms_from + i * step))
                reqs.append(api.CreateNotifyRequest(notify=n))
            resp = await stub.BatchCreateNotify(api.BatchCreateNotifyRequest(requests=reqs))
            ids += [n.id for n in resp.notifies]
        return ids


async def test_sigkill_with_hundreds_of_delayed_notifies_pending_loses_none(tmp_path, target):
    port = free_port()
    first = dev(tmp_path, port, "first").start()
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=first)
        ids = await create_delayed(f"127.0.0.1:{port}", target.url(), 400, 1500, 4000)
        first.kill()  # SIGKILL: no chance to flush anything
        assert len(target.received) == 0
        await asyncio.sleep(0.5)
        second = dev(tmp_path, port, "second").start()
        try:
            await wait_serving(f"127.0.0.1:{port}", proc=second)
            await target.wait_for(400, timeout=30)
            await asyncio.sleep(0.3)
            delivered = target.ids()
            assert set(delivered) == set(ids), "every committed notify is delivered after the restart"
            assert len(delivered) == len(ids), "nothing was in flight at the kill, so nothing is sent twice"
        finally:
            second.terminate()
    finally:
        first.kill()


async def test_overdue_notifies_fire_at_once_after_a_restart(tmp_path, target):
    port = free_port()
    first = dev(tmp_path, port, "first").start()
    await wait_serving(f"127.0.0.1:{port}", proc=first)
    ids = await create_delayed(f"127.0.0.1:{port}", target.url(), 50, 800, 900)
    first.kill()
    await asyncio.sleep(1.2)  # all are overdue now
    second = dev(tmp_path, port, "second").start()
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=second)
        await target.wait_for(50, timeout=5)
        assert set(target.ids()) == set(ids)
    finally:
        second.terminate()


async def test_sigterm_stops_gracefully_and_finishes_the_call_in_flight(tmp_path, target):
    target.respond("/slow", (200, 1.0))
    port = free_port()
    proc = dev(tmp_path, port).start()
    await wait_serving(f"127.0.0.1:{port}", proc=proc)
    async with open_channel(f"127.0.0.1:{port}") as channel:
        stub = notify_service_pb2_grpc.NotifyServiceStub(channel)
        created = (await stub.CreateNotify(api.CreateNotifyRequest(notify=pb.Notify(request=pb.HttpRequest(url=target.url("/slow")))))).notify
    await target.wait_for(1)
    code = await asyncio.to_thread(proc.terminate)
    assert code == 0, proc.log()
    assert "scheduler stopped" in proc.log()
    # The finished call was reported and committed before exit: a restart does not send it again.
    again = dev(tmp_path, port, "again").start()
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=again)
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = notify_service_pb2_grpc.NotifyServiceStub(channel)
            n = (await stub.GetNotify(api.GetNotifyRequest(id=created.id))).notify
        assert n.state == pb.STATE_SUCCEEDED
        await asyncio.sleep(0.3)
        assert len(target.received) == 1
    finally:
        again.terminate()


async def test_scheduler_and_dispatcher_run_as_separate_processes(tmp_path, target):
    port = free_port()
    scheduler = Proc(["scheduler", "--grpc-addr", f"127.0.0.1:{port}", "--http-addr", "", "--store", f"sqlite:///{tmp_path}/n.db"],
                     log_path=tmp_path / "scheduler.log").start()
    dispatchers = [
        Proc(["dispatcher", "--registry", f"static:127.0.0.1:{port}", "--http-addr", "", "--allow-networks", "127.0.0.0/8"],
             log_path=tmp_path / f"dispatcher{i}.log").start()
        for i in range(2)
    ]
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=scheduler)
        async with open_channel(f"127.0.0.1:{port}") as channel:
            admin = admin_service_pb2_grpc.AdminServiceStub(channel)
            for _ in range(100):
                if len((await admin.GetStatus(admin_service_pb2.GetStatusRequest())).dispatchers) == 2:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("dispatchers did not connect:\n" + "\n".join(d.log() for d in dispatchers))
            stub = notify_service_pb2_grpc.NotifyServiceStub(channel)
            reqs = [api.CreateNotifyRequest(notify=pb.Notify(request=pb.HttpRequest(url=target.url(f"/{i}")))) for i in range(40)]
            await stub.BatchCreateNotify(api.BatchCreateNotifyRequest(requests=reqs))
            await target.wait_for(40, timeout=20)
        wait_until(lambda: all("attempt 1: 200 ok" in d.log() for d in dispatchers), 10, "both dispatchers to take work")
    finally:
        for d in dispatchers:
            d.terminate()
        scheduler.terminate()


def cli(port, *args):
    out = subprocess.run([sys.executable, "-m", "notifyagent", *args, "--addr", f"127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=30, env=cli_env())
    return out


async def test_cli_verbs_work_as_the_readme_shows(tmp_path, target):
    port = free_port()
    proc = dev(tmp_path, port).start()
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=proc)
        sent = await asyncio.to_thread(cli, port, "send", target.url("/cli"), "--json", '{"hello": "world"}')
        assert sent.returncode == 0, sent.stderr
        nid = json.loads(sent.stdout)["notify"]["id"]
        await target.wait_for(1)
        assert target.received[0].body == b'{"hello": "world"}'
        await asyncio.sleep(0.2)
        got = json.loads((await asyncio.to_thread(cli, port, "get", nid)).stdout)["notify"]
        assert got["state"] == "STATE_SUCCEEDED" and got["attempts"][0]["statusCode"] == 200

        waiting = json.loads((await asyncio.to_thread(cli, port, "send", target.url("/t"), "--trigger", "deploy-7")).stdout)
        listed = json.loads((await asyncio.to_thread(cli, port, "list", "--state", "WAITING_TRIGGER")).stdout)
        assert [n["id"] for n in listed["notifies"]] == [waiting["notify"]["id"]]
        fired = json.loads((await asyncio.to_thread(cli, port, "trigger", "deploy-7")).stdout)
        assert fired == {"triggered": 1}
        await target.wait_for(2)

        later = json.loads((await asyncio.to_thread(cli, port, "send", target.url("/never"), "--delay", "1h")).stdout)
        cancelled = json.loads((await asyncio.to_thread(cli, port, "cancel", later["notify"]["id"])).stdout)
        assert cancelled["notify"]["state"] == "STATE_CANCELLED"

        status = json.loads((await asyncio.to_thread(cli, port, "status")).stdout)
        assert status["sentOk"] == "2" and len(status["dispatchers"]) == 1

        bad = await asyncio.to_thread(cli, port, "send", "ftp://nope")
        assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "notify.request.url" in bad.stderr
    finally:
        proc.terminate()


async def test_cli_says_what_to_do_when_no_scheduler_runs():
    out = await asyncio.to_thread(cli, free_port(), "status")
    assert out.returncode == 1 and "UNAVAILABLE" in out.stderr and "notifyagent dev" in out.stderr


async def test_dispatcher_killed_mid_call_its_leases_expire_and_are_granted_again(tmp_path, target):
    target.respond("/slow", (200, 1.0))
    port = free_port()
    scheduler = Proc(["scheduler", "--grpc-addr", f"127.0.0.1:{port}", "--http-addr", "", "--lease-margin", "0.5",
                      "--store", f"sqlite:///{tmp_path}/n.db"], log_path=tmp_path / "scheduler.log").start()
    args = ["dispatcher", "--registry", f"static:127.0.0.1:{port}", "--http-addr", "", "--allow-networks", "127.0.0.0/8"]
    doomed = Proc(args, log_path=tmp_path / "doomed.log").start()
    survivor = None
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=scheduler)
        async with open_channel(f"127.0.0.1:{port}") as channel:
            admin = admin_service_pb2_grpc.AdminServiceStub(channel)
            stub = notify_service_pb2_grpc.NotifyServiceStub(channel)
            while not (await admin.GetStatus(admin_service_pb2.GetStatusRequest())).dispatchers:
                await asyncio.sleep(0.05)
            ids = []
            for _ in range(10):
                n = pb.Notify(request=pb.HttpRequest(url=target.url("/slow")))
                n.timeout.FromSeconds(2)
                n.retry.min_backoff.FromSeconds(1)  # the retry after the expiry: 1 s, not the default 5 s
                ids.append((await stub.CreateNotify(api.CreateNotifyRequest(notify=n))).notify.id)
            await target.wait_for(10)
            doomed.kill()  # SIGKILL with 10 calls in flight
            survivor = Proc(args, log_path=tmp_path / "survivor.log").start()
            deadline = asyncio.get_running_loop().time() + 20
            while True:
                got = [(await stub.GetNotify(api.GetNotifyRequest(id=i))).notify for i in ids]
                if all(n.state == pb.STATE_SUCCEEDED for n in got):
                    break
                assert asyncio.get_running_loop().time() < deadline, [pb.State.Name(n.state) for n in got]
                await asyncio.sleep(0.2)
        for n in got:
            assert [a.success for a in n.attempts] == [False, True]
            assert "lease expired" in n.attempts[0].error
        assert sorted(set(target.ids())) == sorted(ids)
    finally:
        doomed.kill()
        if survivor:
            survivor.terminate()
        scheduler.terminate()


async def test_dev_runs_on_plain_asyncio_too(tmp_path, target):
    port = free_port()
    proc = dev(tmp_path, port, "asyncio", "--event-loop", "asyncio").start()
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=proc)
        ids = await create_delayed(f"127.0.0.1:{port}", target.url(), 20, 0, 200)
        await target.wait_for(20)
        assert set(target.ids()) == set(ids)
    finally:
        assert proc.terminate() == 0
