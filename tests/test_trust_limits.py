"""Per-identity Lease limits on real processes: 300 idle streams holding a valid dispatcher
token (they take grants, never read, never report) do not stop a real dispatcher from
delivering 300 new notifies; streams past the limit are refused."""

import asyncio
import time

import grpc

from notifyagent.v1 import admin_service_pb2 as admin, admin_service_pb2_grpc, dispatch_service_pb2 as dpb, dispatch_service_pb2_grpc
from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api, notify_service_pb2_grpc
from support import Proc, Trust, fast_retry, free_port, open_channel, wait_serving

IDLE = 300
NOTIFIES = 300


async def idle_stream(channel, i):
    """Says hello with credit, then neither reads a grant nor reports anything."""
    hello = dpb.DispatcherHello(dispatcher_id=f"idle-{i}", capacity=10, credit=10)

    async def requests():
        yield dpb.LeaseRequest(hello=hello)
        await asyncio.sleep(3600)

    call = dispatch_service_pb2_grpc.DispatchServiceStub(channel).Lease(requests())
    await call.initial_metadata()  # comes once the hello is taken, or with the refusal
    return call


async def test_idle_streams_with_a_dispatcher_token_do_not_starve_a_real_dispatcher(tmp_path, target):
    trust = Trust.make(tmp_path)
    port = free_port()
    addr = f"127.0.0.1:{port}"
    scheduler = Proc(["scheduler", "--grpc-addr", addr, "--http-addr", "", "--store", f"sqlite:///{tmp_path}/n.db",
                      "--lease-margin", "0.5"], log_path=tmp_path / "scheduler.log", env=trust.env())  # fmt: skip
    real = Proc(["dispatcher", "--registry", f"static:{addr}", "--http-addr", "", "--allow-networks", "127.0.0.0/8"],
                log_path=tmp_path / "dispatcher.log", env=trust.env("dispatcher"))  # fmt: skip
    rogue = open_channel(addr, trust.tokens["rogue"])
    calls = []
    try:
        scheduler.start()
        await wait_serving(addr, proc=scheduler)
        calls = list(await asyncio.gather(*(idle_stream(rogue, i) for i in range(IDLE))))
        await asyncio.sleep(1.0)
        refused = [await c.code() for c in calls if c.done()]
        assert refused == [grpc.StatusCode.RESOURCE_EXHAUSTED] * (IDLE - 64), "the default NOTIFY_DISPATCHER_MAX_STREAMS is 64"
        real.start()
        async with open_channel(addr, trust.tokens["tests"]) as ch:
            status = admin_service_pb2_grpc.AdminServiceStub(ch)
            while len((await status.GetStatus(admin.GetStatusRequest())).dispatchers) < 65:
                assert real.popen.poll() is None, real.log()
                await asyncio.sleep(0.1)
            stub = notify_service_pb2_grpc.NotifyServiceStub(ch)
            started = time.monotonic()
            reqs = []
            for i in range(NOTIFIES):
                n = pb.Notify(request=pb.HttpRequest(url=target.url(f"/n{i}")), retry=fast_retry(max_attempts=5))
                n.timeout.FromSeconds(2)
                reqs.append(api.CreateNotifyRequest(notify=n))
            ids = [n.id for n in (await stub.BatchCreateNotify(api.BatchCreateNotifyRequest(requests=reqs))).notifies]
            await target.wait_for(NOTIFIES, timeout=30)
            took = time.monotonic() - started
            print(f"\n{NOTIFIES} notifies delivered in {took:.1f} s past {IDLE} idle streams ({len(refused)} refused)")
            assert set(target.ids()) == set(ids)
            status_now = await status.GetStatus(admin.GetStatusRequest())
            held = sum(d.leases for d in status_now.dispatchers if "@rogue" in d.dispatcher_id)
            assert held == 0, "grants the idle streams took came back at their deadline, and no more went to them"
        assert "let lease" in scheduler.log(), "the stalled streams were noticed"
    finally:
        for call in calls:
            call.cancel()
        await rogue.close()
        real.kill()
        await asyncio.to_thread(scheduler.terminate)


async def test_another_token_cannot_take_over_a_dispatcher_id_or_report_its_leases(tmp_path):
    """In process: the real dispatcher and an intruder with a dispatcher token of its own, same id."""
    from test_lease_protocol import RawDispatcher
    from support import System

    trust = Trust.make(tmp_path)
    system = System(trust.settings(tmp_path, lease_margin=0.3), dispatchers=0, token=trust.tokens["tests"])
    await system.start()
    real_ch, rogue_ch = open_channel(system.scheduler.address, trust.tokens["dispatcher"]), open_channel(system.scheduler.address, trust.tokens["rogue"])
    try:
        real = RawDispatcher(real_ch, "d1", capacity=1)
        n = pb.Notify(request=pb.HttpRequest(url="http://127.0.0.1:9/x"))
        created = (await system.api.CreateNotify(api.CreateNotifyRequest(notify=n))).notify
        (grant,) = await real.wait_grants(1)
        intruder = RawDispatcher(rogue_ch, "d1", capacity=1)
        intruder.report(grant, status=200)  # a fake success for the real one's lease
        await intruder.wait_acked(grant.lease_id)
        assert (await system.get(created.id)).state == pb.STATE_DELIVERING, "refused: not the intruder's lease"
        real.report(grant, status=200)
        await system.wait_state(created.id, pb.STATE_SUCCEEDED)
        ids = sorted(d.dispatcher_id for d in (await system.admin.GetStatus(admin.GetStatusRequest())).dispatchers)
        assert ids == ["d1@dispatcher", "d1@rogue"], "both sessions live side by side"
        assert (await system.get(created.id)).attempts[0].dispatcher_id == "d1@dispatcher"
        await real.close()
        await intruder.close()
    finally:
        await real_ch.close()
        await rogue_ch.close()
        await system.stop()
