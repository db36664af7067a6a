"""Named queues: concurrency and rate limits measured at the target, pause and resume, stats."""

import asyncio

import grpc
import pytest

from notifyagent.common.config import load
from notifyagent.scheduler.engine.queues import parse
from notifyagent.v1 import admin_service_pb2 as admin, notify_pb2 as pb, notify_service_pb2 as api
from support import System, settings_for


async def create_in(system, queue, url, count):
    reqs = [api.CreateNotifyRequest(notify=pb.Notify(request=pb.HttpRequest(url=url), queue=queue)) for _ in range(count)]
    return (await system.api.BatchCreateNotify(api.BatchCreateNotifyRequest(requests=reqs))).notifies


async def test_max_concurrent_holds_under_load_while_other_queues_run_free(system, target):
    await system.admin.SetQueueLimits(admin.SetQueueLimitsRequest(name="narrow", max_concurrent=3))
    target.respond("/narrow", (200, 0.1))
    target.respond("/wide", (200, 0.1))
    await create_in(system, "narrow", target.url("/narrow"), 30)
    await create_in(system, "wide", target.url("/wide"), 30)
    await target.wait_for(60, timeout=20)
    assert target.peak_by_path["/narrow"] == 3, target.peak_by_path
    assert target.peak_by_path["/wide"] > 3, target.peak_by_path


async def test_rate_limit_spaces_grants_as_measured_by_the_target(system, target):
    await system.admin.SetQueueLimits(admin.SetQueueLimitsRequest(name="slow", rate=20, burst=1))
    await create_in(system, "slow", target.url(), 21)
    got = await target.wait_for(21, timeout=10)
    span = got[-1].at - got[0].at
    assert span >= 20 / 20 * 0.9, f"21 calls at 20/s take about a second, took {span:.3f} s"
    assert span < 2.0


async def test_pause_stops_a_queue_and_resume_lets_it_go(system, target):
    paused = (await system.admin.PauseQueue(admin.PauseQueueRequest(name="mail"))).queue
    assert paused.paused
    await create_in(system, "mail", target.url("/mail"), 5)
    await create_in(system, "default", target.url("/other"), 2)
    await target.wait_for(2)
    await asyncio.sleep(0.3)
    assert {r.path for r in target.received} == {"/other"}
    status = await system.admin.GetStatus(admin.GetStatusRequest())
    mail = next(q for q in status.queues if q.name == "mail")
    assert mail.pending == 5 and mail.paused
    await system.admin.ResumeQueue(admin.ResumeQueueRequest(name="mail"))
    await target.wait_for(7)


async def test_pause_survives_a_restart(tmp_path, target):
    first = System(settings_for(tmp_path))
    await first.start()
    await first.admin.PauseQueue(admin.PauseQueueRequest(name="mail"))
    await create_in(first, "mail", target.url(), 3)
    await first.stop()
    second = System(settings_for(tmp_path))
    await second.start()
    try:
        await asyncio.sleep(0.3)
        assert target.received == []
        await second.admin.ResumeQueue(admin.ResumeQueueRequest(name="mail"))
        await target.wait_for(3)
    finally:
        await second.stop()


async def test_queue_stats_count_pending_scheduled_in_flight_and_failed(system, target):
    target.respond("/fail", 400)
    target.respond("/hang", (200, 2.0))
    n = pb.Notify(request=pb.HttpRequest(url=target.url()), queue="q")
    n.delay.FromSeconds(60)
    await system.api.CreateNotify(api.CreateNotifyRequest(notify=n))
    await create_in(system, "q", target.url("/fail"), 1)
    await create_in(system, "q", target.url("/hang"), 1)
    await target.wait_for(2)
    await asyncio.sleep(0.2)
    q = next(q for q in (await system.admin.GetStatus(admin.GetStatusRequest())).queues if q.name == "q")
    assert (q.scheduled, q.failed, q.in_flight) == (1, 1, 1)


async def test_bad_queue_limits_are_invalid_argument(system):
    with pytest.raises(grpc.RpcError) as e:
        await system.admin.SetQueueLimits(admin.SetQueueLimitsRequest(name="x", max_concurrent=-1))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_queue_limits_come_from_configuration_and_reload(tmp_path, target):
    s = System(settings_for(tmp_path, queues="mail:max_concurrent=2:rate=50"))
    await s.start()
    try:
        q = next(q for q in (await s.admin.GetStatus(admin.GetStatusRequest())).queues if q.name == "mail")
        assert (q.max_concurrent, q.rate) == (2, 50)
        changes = await s.scheduler.reload(settings_for(tmp_path, queues="mail:max_concurrent=5"))
        assert changes == ["queue mail: max_concurrent=5 rate=0 burst=0"]
        assert s.scheduler.engine.queue_config("mail").max_concurrent == 5
    finally:
        await s.stop()


def test_queue_settings_parse_and_reject_nonsense(tmp_path):
    assert [(q.name, q.max_concurrent, q.rate, q.burst) for q in parse("a:max_concurrent=3, b:rate=2.5:burst=4")] == [
        ("a", 3, 0.0, 0), ("b", 0, 2.5, 4)]
    for bad in ("a:speed=3", "a:rate=fast", "a:max_concurrent=-2"):
        with pytest.raises(ValueError, match="NOTIFY_QUEUES"):
            parse(bad)
    cfg = tmp_path / "n.toml"
    cfg.write_text("[queues.mail]\nmax_concurrent = 4\nrate = 10\n")
    assert load({}, {"NOTIFY_CONFIG": str(cfg)}).queues == "mail:max_concurrent=4:rate=10"


async def test_a_delayed_notify_being_delivered_counts_once_as_in_flight_not_as_scheduled(system, target):
    target.respond("/hang", (200, 2.0))
    n = pb.Notify(request=pb.HttpRequest(url=target.url("/hang")), queue="d")
    n.delay.FromMilliseconds(100)
    await system.api.CreateNotify(api.CreateNotifyRequest(notify=n))
    await target.wait_for(1)
    status = await system.admin.GetStatus(admin.GetStatusRequest())
    q = next(q for q in status.queues if q.name == "d")
    assert (q.scheduled, q.pending, q.in_flight) == (0, 0, 1)
    counts = {c.state: c.count for c in status.counts}
    assert counts.get(pb.STATE_DELIVERING) == 1 and pb.STATE_SCHEDULED not in counts
