"""End to end in one process: real scheduler and dispatcher on free ports, a real HTTP target."""

import asyncio
import time

import grpc
import pytest

from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api
from support import fast_retry


async def test_immediate_notify_arrives_with_exact_body_and_headers(system, target):
    body = bytes(range(256)) + b"\r\n\x00end"
    req = pb.HttpRequest(method=pb.HTTP_METHOD_PUT, url=target.url("/exact?x=1"), body=body,
                         headers={"X-Custom": "v a l", "Content-Type": "application/x-thing"})
    n = await system.create("", request=req)
    (got,) = await target.wait_for(1)
    assert got.method == "PUT" and got.path == "/exact" and got.query == {"x": "1"}
    assert got.body == body
    assert got.headers["X-Custom"] == "v a l" and got.headers["Content-Type"] == "application/x-thing"
    assert got.headers["Notify-Id"] == n.id and got.headers["Notify-Attempt"] == "1"
    assert got.headers["Idempotency-Key"] == n.id
    done = await system.wait_state(n.id, pb.STATE_SUCCEEDED)
    assert [(a.number, a.status_code, a.success) for a in done.attempts] == [(1, 200, True)]
    assert done.attempts[0].response_snippet == b"answer 200"
    assert done.HasField("complete_time")


async def test_json_body_is_sent_byte_exact_as_json(system, target):
    text = '{"b": 1,   "a": [1.50, "\\u00e9"]}'
    await system.create("", request=pb.HttpRequest(method=pb.HTTP_METHOD_POST, url=target.url(), json_body=text))
    (got,) = await target.wait_for(1)
    assert got.body == text.encode() and got.headers["Content-Type"] == "application/json"


async def test_form_body_is_url_encoded_and_goes_to_the_query_string_for_get(system, target):
    await system.create("", request=pb.HttpRequest(method=pb.HTTP_METHOD_POST, url=target.url("/post"), form_body={"a": "1 2", "b": "é"}))
    await system.create("", request=pb.HttpRequest(method=pb.HTTP_METHOD_GET, url=target.url("/get"), form_body={"q": "x&y"}))
    got = {r.path: r for r in await target.wait_for(2)}
    assert got["/post"].body == b"a=1+2&b=%C3%A9"
    assert got["/post"].headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert got["/get"].query == {"q": "x&y"} and got["/get"].body == b""


async def test_delays_are_never_early_and_late_by_milliseconds(system, target):
    due = {}
    for i, delay_ms in enumerate([150, 300, 450, 600, 800, 1000]):
        n = pb.Notify(request=pb.HttpRequest(url=target.url(f"/d{i}")))
        n.delay.FromMilliseconds(delay_ms)
        created = (await system.api.CreateNotify(api.CreateNotifyRequest(notify=n))).notify
        due[created.id] = created.deliver_at.ToMilliseconds() / 1000
    await target.wait_for(6, timeout=5)
    lateness = [r.at - due[r.headers["Notify-Id"]] for r in target.received]
    assert min(lateness) >= 0, f"delivered early: {lateness}"
    assert max(lateness) < 0.25, f"late by more than milliseconds: {lateness}"


async def test_deliver_at_fires_at_that_time_and_is_scheduled_until_then(system, target):
    n = pb.Notify(request=pb.HttpRequest(url=target.url()))
    at_ms = int(time.time() * 1000) + 400
    n.deliver_at.FromMilliseconds(at_ms)
    created = (await system.api.CreateNotify(api.CreateNotifyRequest(notify=n))).notify
    assert created.state == pb.STATE_SCHEDULED and created.next_attempt_time.ToMilliseconds() == at_ms
    (got,) = await target.wait_for(1)
    assert 0 <= got.at - at_ms / 1000 < 0.25


async def test_trigger_sends_nothing_before_and_every_waiting_notify_after(system, target):
    ids = [(await system.create(target.url(), trigger_key="order-42")).id for _ in range(5)]
    other = await system.create(target.url(), trigger_key="order-43")
    assert (await system.get(ids[0])).state == pb.STATE_WAITING_TRIGGER
    await asyncio.sleep(0.3)
    assert target.received == []
    resp = await system.api.Trigger(api.TriggerRequest(trigger_key="order-42"))
    assert resp.triggered == 5
    await target.wait_for(5)
    await asyncio.sleep(0.2)
    assert sorted(target.ids()) == sorted(ids)
    assert (await system.get(other.id)).state == pb.STATE_WAITING_TRIGGER
    assert (await system.api.Trigger(api.TriggerRequest(trigger_key="order-42"))).triggered == 0


async def test_retry_until_success_records_every_attempt(system, target):
    target.respond("/flaky", 500, 500, 200)
    n = await system.create(target.url("/flaky"), retry=fast_retry())
    done = await system.wait_state(n.id, pb.STATE_SUCCEEDED)
    assert [(a.number, a.status_code, a.success) for a in done.attempts] == [(1, 500, False), (2, 500, False), (3, 200, True)]
    assert [r.headers["Notify-Attempt"] for r in target.received] == ["1", "2", "3"]


async def test_retries_exhausted_fail_with_every_attempt_recorded(system, target):
    target.respond("/down", 503)
    n = await system.create(target.url("/down"), retry=fast_retry(max_attempts=4))
    done = await system.wait_state(n.id, pb.STATE_FAILED)
    assert [a.status_code for a in done.attempts] == [503] * 4
    assert len(target.received) == 4 and done.attempt_count == 4


async def test_non_retryable_code_is_not_retried(system, target):
    target.respond("/bad", 400)
    n = await system.create(target.url("/bad"), retry=fast_retry())
    done = await system.wait_state(n.id, pb.STATE_FAILED)
    await asyncio.sleep(0.2)
    assert len(target.received) == 1 and [a.status_code for a in done.attempts] == [400]


async def test_connection_refused_is_retried_and_recorded(system, target):
    from support import free_port

    n = await system.create(f"http://127.0.0.1:{free_port()}/", retry=fast_retry(max_attempts=2))
    done = await system.wait_state(n.id, pb.STATE_FAILED)
    assert len(done.attempts) == 2 and all(a.status_code == 0 and "connect" in a.error for a in done.attempts)


async def test_ordering_key_delivers_one_at_a_time_in_creation_order(system, target):
    target.respond("/ordered", (200, 0.05))
    ids = [(await system.create(target.url("/ordered"), ordering_key="acct-1")).id for _ in range(6)]
    await target.wait_for(6)
    assert target.ids() == ids
    assert target.max_in_flight == 1


async def test_failing_head_blocks_its_ordering_key_until_it_succeeds(system, target):
    target.respond("/head", 500, 500, 200)
    first = await system.create(target.url("/head"), ordering_key="k", retry=fast_retry(backoff=0.1))
    second = await system.create(target.url("/next"), ordering_key="k")
    await target.wait_for(4)
    assert [r.path for r in target.received] == ["/head", "/head", "/head", "/next"]
    assert [r.headers["Notify-Id"] for r in target.received][-1] == second.id
    assert (await system.wait_state(first.id, pb.STATE_SUCCEEDED)).attempt_count == 3


async def test_without_ordering_key_calls_run_concurrently(system, target):
    target.respond("/slow", (200, 0.3))
    for _ in range(8):
        await system.create(target.url("/slow"))
    await target.wait_for(8)
    assert target.max_in_flight >= 4


async def test_same_request_id_gives_one_notify_and_one_delivery(system, target):
    a = await system.create(target.url(), request_id="req-1")
    b = await system.create(target.url("/other"), request_id="req-1")
    assert a.id == b.id and b.request.url == target.url()
    await target.wait_for(1)
    await asyncio.sleep(0.3)
    assert len(target.received) == 1


async def test_concurrent_creates_with_one_request_id_give_one_notify(system, target):
    got = await asyncio.gather(*(system.create(target.url(), request_id="same") for _ in range(20)))
    assert len({n.id for n in got}) == 1
    await target.wait_for(1)
    await asyncio.sleep(0.3)
    assert len(target.received) == 1


async def test_cancel_before_due_time_is_cancelled_and_never_sent(system, target):
    n = pb.Notify(request=pb.HttpRequest(url=target.url()))
    n.delay.FromMilliseconds(300)
    created = (await system.api.CreateNotify(api.CreateNotifyRequest(notify=n))).notify
    cancelled = (await system.api.CancelNotify(api.CancelNotifyRequest(id=created.id))).notify
    assert cancelled.state == pb.STATE_CANCELLED
    await asyncio.sleep(0.6)
    assert target.received == []
    assert (await system.get(created.id)).state == pb.STATE_CANCELLED


async def test_cancel_of_a_delivered_notify_is_failed_precondition(system, target):
    n = await system.create(target.url())
    await system.wait_state(n.id, pb.STATE_SUCCEEDED)
    with pytest.raises(grpc.RpcError) as e:
        await system.api.CancelNotify(api.CancelNotifyRequest(id=n.id))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_cancel_while_delivering_revokes_the_call(system, target):
    target.respond("/hang", (200, 5.0))
    n = await system.create(target.url("/hang"))
    await target.wait_for(1)
    assert (await system.get(n.id)).state == pb.STATE_DELIVERING
    await system.api.CancelNotify(api.CancelNotifyRequest(id=n.id))
    await asyncio.sleep(0.3)
    assert (await system.get(n.id)).state == pb.STATE_CANCELLED
    assert system.dispatchers[0].client.in_flight == 0


async def test_retry_notify_sends_a_failed_one_again_with_a_fresh_budget(system, target):
    target.respond("/once", 500, 500, 200)
    n = await system.create(target.url("/once"), retry=fast_retry(max_attempts=2))
    await system.wait_state(n.id, pb.STATE_FAILED)
    again = (await system.api.RetryNotify(api.RetryNotifyRequest(id=n.id))).notify
    assert again.state == pb.STATE_PENDING
    done = await system.wait_state(n.id, pb.STATE_SUCCEEDED)
    assert [a.status_code for a in done.attempts] == [500, 500, 200]
    with pytest.raises(grpc.RpcError) as e:
        await system.api.RetryNotify(api.RetryNotifyRequest(id=n.id))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_fire_and_forget_counts_any_answer_and_sends_once(system, target):
    target.respond("/ff", 500)
    n = await system.create(target.url("/ff"), fire_and_forget=True)
    done = await system.wait_state(n.id, pb.STATE_SUCCEEDED)
    assert len(done.attempts) == 1 and len(target.received) == 1


async def test_success_criteria_status_codes_and_body_match(system, target):
    target.respond("/accepted", 202)
    strict = await system.create(target.url("/accepted"), success=pb.SuccessCriteria(status_codes=[200]), retry=fast_retry(max_attempts=1))
    body = await system.create(target.url("/ok"), success=pb.SuccessCriteria(body_contains="answer 200"))
    missing = await system.create(target.url("/ok2"), success=pb.SuccessCriteria(body_contains="nope"), retry=fast_retry(max_attempts=1))
    assert (await system.wait_state(strict.id, pb.STATE_FAILED)).attempts[0].status_code == 202
    await system.wait_state(body.id, pb.STATE_SUCCEEDED)
    await system.wait_state(missing.id, pb.STATE_FAILED)


async def test_per_attempt_timeout_ends_the_attempt(system, target):
    target.respond("/slow", (200, 3.0))
    n = pb.Notify(request=pb.HttpRequest(url=target.url("/slow")), retry=fast_retry(max_attempts=1))
    n.timeout.FromMilliseconds(200)
    created = (await system.api.CreateNotify(api.CreateNotifyRequest(notify=n))).notify
    done = await system.wait_state(created.id, pb.STATE_FAILED, timeout=5)
    assert "timed out" in done.attempts[0].error


async def test_batch_create_commits_all_in_order(system, target):
    reqs = [api.CreateNotifyRequest(notify=pb.Notify(request=pb.HttpRequest(url=target.url(f"/b{i}")))) for i in range(50)]
    resp = await system.api.BatchCreateNotify(api.BatchCreateNotifyRequest(requests=reqs))
    assert [n.request.url for n in resp.notifies] == [r.notify.request.url for r in reqs]
    assert len({n.id for n in resp.notifies}) == 50
    await target.wait_for(50)


async def test_list_filters_by_state_and_pages_with_tokens(system, target):
    ids = [(await system.create(target.url(), trigger_key="later")).id for _ in range(7)]
    seen, token = [], ""
    while True:
        resp = await system.api.ListNotifies(api.ListNotifiesRequest(state=pb.STATE_WAITING_TRIGGER, page_size=3, page_token=token))
        seen += [n.id for n in resp.notifies]
        token = resp.next_page_token
        if not token:
            break
    assert seen == ids
    none = await system.api.ListNotifies(api.ListNotifiesRequest(state=pb.STATE_SUCCEEDED))
    assert list(none.notifies) == []


async def test_list_filters_by_label_with_or_without_a_value(system, target):
    a = await system.create(target.url(), trigger_key="later", labels={"order": "42", "team": "pay"})
    b = await system.create(target.url(), trigger_key="later", labels={"order": "43"})
    await system.create(target.url(), trigger_key="later")

    async def ids(label: str) -> list[str]:
        return [n.id for n in (await system.api.ListNotifies(api.ListNotifiesRequest(label=label))).notifies]

    assert await ids("order=42") == [a.id]
    assert await ids("order") == [a.id, b.id]
    assert await ids("team=pay") == [a.id]
    assert await ids("order=4") == []


async def test_get_unknown_id_is_not_found(system):
    with pytest.raises(grpc.RpcError) as e:
        await system.api.GetNotify(api.GetNotifyRequest(id="nope"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_status_reports_counts_and_connected_dispatchers(system, target):
    from notifyagent.v1 import admin_service_pb2 as admin

    n = await system.create(target.url())
    await system.wait_state(n.id, pb.STATE_SUCCEEDED)
    status = await system.admin.GetStatus(admin.GetStatusRequest())
    assert {c.state: c.count for c in status.counts}[pb.STATE_SUCCEEDED] == 1
    assert status.sent_ok == 1 and len(status.dispatchers) == 1 and status.pid > 0


async def test_health_is_serving_and_reflection_lists_the_services(system):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    assert await system.serving()
    stub = reflection_pb2_grpc.ServerReflectionStub(system.channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    async for resp in call:
        names = {s.name for s in resp.list_services_response.service}
        break
    assert {"notifyagent.v1.NotifyService", "notifyagent.v1.AdminService", "grpc.health.v1.Health"} <= names
