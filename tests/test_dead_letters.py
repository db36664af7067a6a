"""Failed for good, and after: dead letters listed by state and queue, redrive,
result callbacks, deliver-by (expire_at) and UpdateNotify."""

import asyncio
import json
import time

import grpc
import pytest
from google.protobuf import field_mask_pb2

from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api
from support import fast_retry


async def test_failed_notifies_are_listed_by_state_and_queue_and_redriven(system, target):
    target.respond("/dead", 500, 500, 500, 200)
    ids = []
    for _ in range(3):
        n = await system.create(target.url("/dead"), queue="billing", retry=fast_retry(max_attempts=1))
        ids.append(n.id)
    ok = await system.create(target.url("/fine"), queue="billing")
    for i in ids:
        await system.wait_state(i, pb.STATE_FAILED)
    await system.wait_state(ok.id, pb.STATE_SUCCEEDED)
    dead = (await system.api.ListNotifies(api.ListNotifiesRequest(state=pb.STATE_FAILED, queue="billing"))).notifies
    assert [n.id for n in dead] == ids
    assert list((await system.api.ListNotifies(api.ListNotifiesRequest(state=pb.STATE_FAILED, queue="other"))).notifies) == []
    for i in ids:
        await system.api.RetryNotify(api.RetryNotifyRequest(id=i))
    for i in ids:
        done = await system.wait_state(i, pb.STATE_SUCCEEDED)
        assert [a.status_code for a in done.attempts] == [500, 200]


async def test_callback_url_receives_the_final_outcome(system, target):
    target.respond("/fails", 400)
    ok = await system.create(target.url("/works"), callback_url=target.url("/callback"), labels={"order": "42"})
    bad = await system.create(target.url("/fails"), callback_url=target.url("/callback"))
    await target.wait_for(4)
    callbacks = {json.loads(r.body)["id"]: (r, json.loads(r.body)) for r in target.received if r.path == "/callback"}
    assert set(callbacks) == {ok.id, bad.id}
    req, doc = callbacks[ok.id]
    assert req.method == "POST" and req.headers["Content-Type"] == "application/json"
    assert doc["state"] == "SUCCEEDED" and doc["attempts"] == 1 and doc["labels"] == {"order": "42"}
    assert doc["last_attempt"]["status_code"] == 200
    _, doc = callbacks[bad.id]
    assert doc["state"] == "FAILED" and doc["last_attempt"]["status_code"] == 400 and "not retryable" in doc["reason"]


async def test_expire_at_gives_up_once_passed(system, target):
    target.respond("/down", 503)
    n = pb.Notify(request=pb.HttpRequest(url=target.url("/down")), retry=fast_retry(max_attempts=100, backoff=0.1))
    n.expire_at.FromMilliseconds(int(time.time() * 1000) + 600)
    created = (await system.api.CreateNotify(api.CreateNotifyRequest(notify=n))).notify
    done = await system.wait_state(created.id, pb.STATE_FAILED, timeout=5)
    assert 2 <= len(done.attempts) < 10
    assert done.complete_time.ToMilliseconds() <= n.expire_at.ToMilliseconds() + 300


async def test_expire_at_passed_before_the_first_attempt_fails_without_sending(system, target):
    n = pb.Notify(request=pb.HttpRequest(url=target.url()))
    n.deliver_at.FromMilliseconds(int(time.time() * 1000) + 400)
    n.expire_at.FromMilliseconds(int(time.time() * 1000) + 200)
    created = (await system.api.CreateNotify(api.CreateNotifyRequest(notify=n))).notify
    done = await system.wait_state(created.id, pb.STATE_FAILED, timeout=5)
    assert list(done.attempts) == [] and target.received == []


async def test_update_notify_changes_a_pending_ones_schedule_and_request(system, target):
    n = pb.Notify(request=pb.HttpRequest(url=target.url("/old")))
    n.delay.FromSeconds(3600)
    created = (await system.api.CreateNotify(api.CreateNotifyRequest(notify=n))).notify
    change = pb.Notify(id=created.id, request=pb.HttpRequest(url=target.url("/new"), json_body='{"v": 2}'))
    change.delay.FromMilliseconds(200)
    mask = field_mask_pb2.FieldMask(paths=["request", "delay"])
    updated = (await system.api.UpdateNotify(api.UpdateNotifyRequest(notify=change, update_mask=mask))).notify
    assert updated.request.url == target.url("/new") and updated.state == pb.STATE_SCHEDULED
    (got,) = await target.wait_for(1)
    assert got.path == "/new" and got.body == b'{"v": 2}'
    await asyncio.sleep(0.2)
    assert len(target.received) == 1, "the old schedule does not fire too"


async def test_update_notify_can_move_a_notify_onto_a_trigger(system, target):
    created = await system.create(target.url(), trigger_key="a")
    change = pb.Notify(id=created.id, trigger_key="b")
    await system.api.UpdateNotify(api.UpdateNotifyRequest(notify=change, update_mask=field_mask_pb2.FieldMask(paths=["trigger_key"])))
    assert (await system.api.Trigger(api.TriggerRequest(trigger_key="a"))).triggered == 0
    assert (await system.api.Trigger(api.TriggerRequest(trigger_key="b"))).triggered == 1
    await target.wait_for(1)


async def test_update_notify_refuses_finished_ones_and_bad_masks(system, target):
    done = await system.create(target.url())
    await system.wait_state(done.id, pb.STATE_SUCCEEDED)
    mask = field_mask_pb2.FieldMask(paths=["labels"])
    with pytest.raises(grpc.RpcError) as e:
        await system.api.UpdateNotify(api.UpdateNotifyRequest(notify=pb.Notify(id=done.id, request=pb.HttpRequest(url=target.url())), update_mask=mask))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    later = await system.create(target.url(), trigger_key="t")
    for paths in ([], ["queue"], ["nonsense"]):
        with pytest.raises(grpc.RpcError) as e:
            await system.api.UpdateNotify(api.UpdateNotifyRequest(
                notify=pb.Notify(id=later.id, request=pb.HttpRequest(url=target.url())), update_mask=field_mask_pb2.FieldMask(paths=paths)))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        await system.api.UpdateNotify(api.UpdateNotifyRequest(
            notify=pb.Notify(id=later.id, request=pb.HttpRequest(url="ftp://x")), update_mask=field_mask_pb2.FieldMask(paths=["request"])))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await system.get(later.id)).request.url == target.url()
