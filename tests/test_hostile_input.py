"""Hostile input: each finding of issue 7 as a test. Nothing invalid is stored, nothing
answers UNKNOWN or INTERNAL, errors stay small, and reads keep working."""

import math
import sqlite3
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from notifyagent.v1 import admin_service_pb2 as admin, notify_pb2 as pb, notify_service_pb2 as api

from support import System, settings_for

YEAR_10000_S = 253402300800  # 10000-01-01T00:00:00Z
NOTIFY = "/notifyagent.v1.NotifyService/"


def _req(url="http://127.0.0.1:9/x", **fields):
    return pb.HttpRequest(method=pb.HTTP_METHOD_POST, url=url, **fields)


def _violations(err: grpc.RpcError) -> dict[str, str]:
    out = {}
    for detail in rpc_status.from_call(err).details:
        bad = error_details_pb2.BadRequest()
        assert detail.Unpack(bad)
        out.update({v.field: v.description for v in bad.field_violations})
    return out


async def _invalid(call) -> dict[str, str]:
    with pytest.raises(grpc.RpcError) as e:
        await call
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.value.code(), e.value.details())
    return _violations(e.value)


async def _nothing_stored(system) -> None:
    assert list((await system.api.ListNotifies(api.ListNotifiesRequest())).notifies) == []


async def test_expire_at_after_year_9999_is_refused_and_reads_keep_working(system):
    n = pb.Notify(request=_req())
    n.expire_at.seconds = YEAR_10000_S + 86400
    found = await _invalid(system.api.CreateNotify(api.CreateNotifyRequest(notify=n)))
    assert "notify.expire_at" in found
    await _nothing_stored(system)


async def test_a_delay_of_9e15_seconds_or_more_is_refused(system):
    for s in (9 * 10**15, 10**16, 2**63 - 1):
        n = pb.Notify(request=_req())
        n.delay.seconds = s
        assert "notify.delay" in await _invalid(system.api.CreateNotify(api.CreateNotifyRequest(notify=n)))
    await _nothing_stored(system)


async def test_trigger_with_a_huge_delay_is_refused_and_the_notify_stays_readable(system):
    created = await system.create("", request=_req(), trigger_key="deploy")
    for s in (9 * 10**15, 10**16):
        t = api.TriggerRequest(trigger_key="deploy")
        t.delay.seconds = s
        assert "delay" in await _invalid(system.api.Trigger(t))
    got = await system.get(created.id)
    assert got.state == pb.STATE_WAITING_TRIGGER
    assert len((await system.api.ListNotifies(api.ListNotifiesRequest())).notifies) == 1


async def test_update_to_expire_at_in_year_10000_is_refused(system):
    created = await system.create("", request=_req(), trigger_key="later")
    n = pb.Notify(id=created.id)
    n.expire_at.seconds = YEAR_10000_S
    req = api.UpdateNotifyRequest(notify=n)
    req.update_mask.paths.append("expire_at")
    assert "notify.expire_at" in await _invalid(system.api.UpdateNotify(req))
    n = pb.Notify(id=created.id)
    n.delay.seconds = 10**16
    req = api.UpdateNotifyRequest(notify=n)
    req.update_mask.paths.append("schedule")
    assert "notify.delay" in await _invalid(system.api.UpdateNotify(req))
    assert (await system.get(created.id)).state == pb.STATE_WAITING_TRIGGER


async def test_malformed_protobuf_and_bad_utf8_are_invalid_argument(system):
    raw = system.channel.unary_unary(NOTIFY + "CreateNotify")
    for wire in (b"\xff\xff\xff", b"\x0a\x05\x01", b"\x12\x01\xff", b"\x0a\x04\x12\x02\x12\xff"):
        found = await _invalid(raw(wire))
        assert "request" in found
    for method in ("GetNotify", "ListNotifies", "Trigger", "UpdateNotify", "BatchCreateNotify"):
        await _invalid(system.channel.unary_unary(NOTIFY + method)(b"\xff\xff\xff"))
    await _invalid(system.channel.unary_unary("/notifyagent.v1.AdminService/SetQueueLimits")(b"\xff"))
    await _nothing_stored(system)
    assert await system.serving()


async def test_deeply_nested_json_body_is_invalid_argument(system):
    for depth in (100, 100_000):
        body = "[" * depth + "]" * depth
        found = await _invalid(system.api.CreateNotify(api.CreateNotifyRequest(notify=pb.Notify(request=_req(json_body=body)))))
        assert "notify.request.json_body" in found
    await _nothing_stored(system)


async def test_nan_rate_is_refused_and_changes_nothing(system):
    await system.admin.SetQueueLimits(admin.SetQueueLimitsRequest(name="q", rate=5))
    for rate in (math.nan, math.inf, -math.inf):
        assert "rate" in await _invalid(system.admin.SetQueueLimits(admin.SetQueueLimitsRequest(name="q", rate=rate)))
    status = await system.admin.GetStatus(admin.GetStatusRequest())
    assert [q.rate for q in status.queues if q.name == "q"] == [5]


async def test_control_characters_in_keys_names_and_ids_are_invalid_argument(system):
    bad = "a\x00b"
    calls = [
        system.api.Trigger(api.TriggerRequest(trigger_key=bad)),
        system.api.GetNotify(api.GetNotifyRequest(id=bad)),
        system.api.CancelNotify(api.CancelNotifyRequest(id=bad)),
        system.api.RetryNotify(api.RetryNotifyRequest(id=bad)),
        system.api.ListNotifies(api.ListNotifiesRequest(queue=bad)),
        system.api.ListNotifies(api.ListNotifiesRequest(trigger_key=bad)),
        system.api.ListNotifies(api.ListNotifiesRequest(ordering_key=bad)),
        system.admin.PauseQueue(admin.PauseQueueRequest(name=bad)),
        system.admin.ResumeQueue(admin.ResumeQueueRequest(name=bad)),
        system.api.CreateNotify(api.CreateNotifyRequest(notify=pb.Notify(request=_req(), labels={bad: "v"}))),
        system.api.CreateNotify(api.CreateNotifyRequest(notify=pb.Notify(request=_req(), ordering_key=bad))),
        system.api.GetNotify(api.GetNotifyRequest(id="x" * 65)),
    ]
    for call in calls:
        await _invalid(call)
    await _nothing_stored(system)


async def test_errors_never_echo_a_huge_value(system):
    huge = "x" * 2_000_000
    cases = [
        pb.Notify(request=_req(headers={huge: "v"})),
        pb.Notify(request=_req(url="ftp://" + huge)),
        pb.Notify(request=_req(), labels={huge[:100_000] + str(i): "v" for i in range(5)}),
        pb.Notify(request=_req(headers={f"X-{i}\x01": "v" for i in range(1000)})),
        pb.Notify(request=pb.HttpRequest(method=99, url="http://127.0.0.1:9/x"), queue=huge),
    ]
    for n in cases:
        with pytest.raises(grpc.RpcError) as e:
            await system.api.CreateNotify(api.CreateNotifyRequest(notify=n))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        found = _violations(e.value)
        assert found and sum(len(f) + len(d) for f, d in found.items()) < 12_000
        assert len(e.value.details()) <= 1000


async def test_headers_and_labels_have_bounds(system):
    too_many_labels = pb.Notify(request=_req(), labels={f"k{i}": "v" for i in range(100_000)})
    assert "notify.labels" in await _invalid(system.api.CreateNotify(api.CreateNotifyRequest(notify=too_many_labels)))
    big_headers = pb.Notify(request=_req(headers={"X-Big": "v" * (200 << 10)}))
    assert "notify.request.headers" in await _invalid(system.api.CreateNotify(api.CreateNotifyRequest(notify=big_headers)))
    many_headers = pb.Notify(request=_req(headers={f"X-{i}": "v" for i in range(500)}))
    assert "notify.request.headers" in await _invalid(system.api.CreateNotify(api.CreateNotifyRequest(notify=many_headers)))
    await _nothing_stored(system)


async def test_a_row_that_cannot_be_decoded_is_reported_not_raised(tmp_path):
    settings = settings_for(tmp_path)
    s = System(settings, dispatchers=0)
    await s.start()
    try:
        a = await s.create("", request=_req(), trigger_key="t")
        b = await s.create("", request=_req(), trigger_key="t")
    finally:
        await s.stop()
    db = sqlite3.connect(f"{tmp_path}/notify.db")
    db.execute("UPDATE notifies SET spec = '{broken', state = 3, due_ms = 0 WHERE id = ?", (a.id,))
    db.commit()
    db.close()
    s = System(settings, dispatchers=0)
    await s.start()
    try:
        listed = (await s.api.ListNotifies(api.ListNotifiesRequest())).notifies
        assert [n.id for n in listed] == [a.id, b.id]
        assert "notifyagent.unreadable" in listed[0].labels
        got = await s.get(a.id)
        assert "cannot be decoded" in got.labels["notifyagent.unreadable"]
        assert (await s.get(b.id)).state == pb.STATE_WAITING_TRIGGER
        await s.admin.GetStatus(admin.GetStatusRequest())
    finally:
        await s.stop()


async def test_batch_is_bounded_by_count(system):
    reqs = [api.CreateNotifyRequest(notify=pb.Notify(request=_req())) for _ in range(1001)]
    assert "requests" in await _invalid(system.api.BatchCreateNotify(api.BatchCreateNotifyRequest(requests=reqs)))
    await _nothing_stored(system)


async def test_schedule_bounds_still_allow_a_year_ahead(system):
    n = pb.Notify(request=_req())
    n.deliver_at.FromMilliseconds(int((time.time() + 365 * 86400) * 1000))
    n.expire_at.FromMilliseconds(int((time.time() + 390 * 86400) * 1000))
    created = await system.create("", request=n.request, deliver_at=n.deliver_at, expire_at=n.expire_at)
    assert (await system.get(created.id)).state == pb.STATE_SCHEDULED


async def test_a_lease_hello_out_of_bounds_is_invalid_argument(system):
    from notifyagent.v1 import dispatch_service_pb2 as dpb, dispatch_service_pb2_grpc as dgrpc

    for hello in (dpb.DispatcherHello(dispatcher_id="d" * 1000, capacity=1),
                  dpb.DispatcherHello(dispatcher_id="a\nb", capacity=1),
                  dpb.DispatcherHello(dispatcher_id="d", capacity=2_000_000_000)):  # fmt: skip

        async def requests(h=hello):
            yield dpb.LeaseRequest(hello=h)

        call = dgrpc.DispatchServiceStub(system.channel).Lease(requests())
        with pytest.raises(grpc.RpcError) as e:
            async for _ in call:
                pass
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await system.serving()
