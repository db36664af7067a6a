"""Fan-out groups: one batch, many calls, one status (GetGroup), one cancel (CancelGroup)
and one callback when the last member ends."""

import asyncio
import json
import time

import grpc
import pytest

from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api, notify_service_pb2_grpc
from support import Proc, Target, fast_retry, free_port, open_channel, wait_serving
from test_bad_input import violations


def counts(group: pb.Group) -> dict[str, int]:
    return {pb.State.Name(c.state).removeprefix("STATE_"): c.count for c in group.counts}


def member(url: str, *, delay_s: float = 0, **fields) -> api.CreateNotifyRequest:
    n = pb.Notify(request=pb.HttpRequest(url=url), **fields)
    if delay_s:
        n.delay.FromMilliseconds(int(delay_s * 1000))
    return api.CreateNotifyRequest(notify=n)


async def wait_done(stub, key: str, timeout: float = 15.0) -> pb.Group:
    deadline = time.monotonic() + timeout
    while True:
        group = (await stub.GetGroup(api.GetGroupRequest(group_key=key))).group
        if group.done:
            return group
        if time.monotonic() > deadline:
            raise AssertionError(f"group {key} not done: {counts(group)}")
        await asyncio.sleep(0.05)


async def wait_until_counts(stub, key: str, expected: dict[str, int], timeout: float = 10.0) -> pb.Group:
    deadline = time.monotonic() + timeout
    while True:
        group = (await stub.GetGroup(api.GetGroupRequest(group_key=key))).group
        if counts(group) == expected or time.monotonic() > deadline:
            return group
        await asyncio.sleep(0.05)


async def wait_notify_state(stub, notify_id: str, state: int, timeout: float = 10.0) -> pb.Notify:
    deadline = time.monotonic() + timeout
    while True:  # a result is committed a moment after the target answered
        n = (await stub.GetNotify(api.GetNotifyRequest(id=notify_id))).notify
        if n.state == state or time.monotonic() > deadline:
            return n
        await asyncio.sleep(0.05)


async def callbacks_settled(target: Target, path: str, expected: int) -> list[dict]:
    """Waits for `expected` calls to path, then a little longer for any extra one."""
    deadline = time.monotonic() + 10
    while len([r for r in target.received if r.path == path]) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    return [json.loads(r.body) for r in target.received if r.path == path]


async def test_a_batch_to_five_targets_with_one_failing_for_good_ends_4_succeeded_1_failed_and_calls_back_once(tmp_path):
    targets = [Target() for _ in range(5)]
    for t in targets:
        await t.start()
    targets[2].respond("/hook", 400)  # not retryable: FAILED for good
    port = free_port()
    dev = Proc(["dev", "--grpc-addr", f"127.0.0.1:{port}", "--http-addr", "", "--store", f"sqlite:///{tmp_path}/n.db"],
               log_path=tmp_path / "dev.log").start()  # fmt: skip
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=dev)
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = notify_service_pb2_grpc.NotifyServiceStub(channel)
            batch = api.BatchCreateNotifyRequest(
                requests=[member(t.url("/hook")) for t in targets], group_key="order-42",
                group_callback_url=targets[0].url("/group-done"),
            )  # fmt: skip
            created = (await stub.BatchCreateNotify(batch)).notifies
            assert [n.group_key for n in created] == ["order-42"] * 5
            group = await wait_done(stub, "order-42")
            assert counts(group) == {"SUCCEEDED": 4, "FAILED": 1}
            assert (group.total, group.done, group.callback_url) == (5, True, targets[0].url("/group-done"))
            listed = (await stub.ListNotifies(api.ListNotifiesRequest(group_key="order-42"))).notifies
            assert [n.id for n in listed] == [n.id for n in created]
            assert group.done_time.ToMilliseconds() == max(n.complete_time.ToMilliseconds() for n in listed)

            (doc,) = await callbacks_settled(targets[0], "/group-done", 1)
            assert doc == {"group_key": "order-42", "done": True, "total": 5, "counts": {"SUCCEEDED": 4, "FAILED": 1},
                           "done_time_ms": group.done_time.ToMilliseconds()}  # fmt: skip
            # the callback was committed with the last member's end, so a group seen done has it
            assert group.callback_time.ToMilliseconds() >= group.done_time.ToMilliseconds()
            made = await wait_notify_state(stub, group.callback_notify_id, pb.STATE_SUCCEEDED)
            assert (made.request.url, made.queue, made.state) == (group.callback_url, "callbacks", pb.STATE_SUCCEEDED)
        for t in targets:
            assert len([r for r in t.received if r.path == "/hook"]) == 1
    finally:
        dev.terminate()
        for t in targets:
            await t.stop()


async def test_cancel_group_cancels_exactly_the_delayed_members(system, target):
    batch = api.BatchCreateNotifyRequest(
        requests=[member(target.url("/now")) for _ in range(2)] + [member(target.url("/later"), delay_s=3600) for _ in range(3)],
        group_key="campaign-7", group_callback_url=target.url("/group-done"),
    )  # fmt: skip
    created = (await system.api.BatchCreateNotify(batch)).notifies
    for n in created[:2]:
        await system.wait_state(n.id, pb.STATE_SUCCEEDED)
    group = (await system.api.GetGroup(api.GetGroupRequest(group_key="campaign-7"))).group
    assert (counts(group), group.done) == ({"SUCCEEDED": 2, "SCHEDULED": 3}, False)

    resp = await system.api.CancelGroup(api.CancelGroupRequest(group_key="campaign-7"))
    assert resp.cancelled == 3
    assert (counts(resp.group), resp.group.done) == ({"SUCCEEDED": 2, "CANCELLED": 3}, True)
    cancelled = (await system.api.ListNotifies(api.ListNotifiesRequest(group_key="campaign-7", state=pb.STATE_CANCELLED))).notifies
    assert [n.id for n in cancelled] == [n.id for n in created[2:]]
    (doc,) = await callbacks_settled(target, "/group-done", 1)
    assert doc["counts"] == {"SUCCEEDED": 2, "CANCELLED": 3}
    assert (await system.api.CancelGroup(api.CancelGroupRequest(group_key="campaign-7"))).cancelled == 0
    assert not [r for r in target.received if r.path == "/later"]


async def test_a_member_retried_to_success_ends_the_group_once(system, target):
    target.respond("/flaky", 503, 503, 200)
    batch = api.BatchCreateNotifyRequest(
        requests=[member(target.url("/flaky"), retry=fast_retry()), member(target.url("/ok"))],
        group_key="retrying", group_callback_url=target.url("/group-done"),
    )  # fmt: skip
    await system.api.BatchCreateNotify(batch)
    group = await wait_done(system.api, "retrying")
    assert counts(group) == {"SUCCEEDED": 2}
    (doc,) = await callbacks_settled(target, "/group-done", 1)
    assert doc["counts"] == {"SUCCEEDED": 2}


async def test_request_id_idempotency_works_per_item_of_a_grouped_batch(system, target):
    def batch():
        return api.BatchCreateNotifyRequest(
            requests=[api.CreateNotifyRequest(notify=pb.Notify(request=pb.HttpRequest(url=target.url(f"/{i}"))),
                                              request_id=f"order-9-{i}") for i in range(3)],
            group_key="order-9", group_callback_url=target.url("/group-done"),
        )  # fmt: skip

    first = (await system.api.BatchCreateNotify(batch())).notifies
    again = (await system.api.BatchCreateNotify(batch())).notifies
    assert [n.id for n in again] == [n.id for n in first]
    assert (await wait_done(system.api, "order-9")).total == 3
    assert len(await callbacks_settled(target, "/group-done", 1)) == 1


async def test_a_group_keeps_its_first_callback_url(system, target):
    await system.api.BatchCreateNotify(api.BatchCreateNotifyRequest(
        requests=[member(target.url("/a"), delay_s=3600)], group_key="g", group_callback_url=target.url("/first")))  # fmt: skip
    with pytest.raises(grpc.RpcError) as e:
        await system.api.BatchCreateNotify(api.BatchCreateNotifyRequest(
            requests=[member(target.url("/b"))], group_key="g", group_callback_url=target.url("/second")))  # fmt: skip
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await system.api.GetGroup(api.GetGroupRequest(group_key="g"))).group.total == 1


async def test_a_group_of_ten_thousand_reports_correct_counts(system, target):
    key = "big-fan-out"
    for start in range(0, 10_000, 1_000):
        reqs = [member(target.url("/now")) if i < 10 else member(target.url("/later"), delay_s=3600)
                for i in range(start, start + 1_000)]  # fmt: skip
        await system.api.BatchCreateNotify(api.BatchCreateNotifyRequest(requests=reqs, group_key=key))
    await target.wait_for(10)
    await wait_until_counts(system.api, key, {"SUCCEEDED": 10, "SCHEDULED": 9_990})

    async def timed(call):
        began = time.perf_counter()
        resp = await call
        return resp, time.perf_counter() - began

    got, took = await timed(system.api.GetGroup(api.GetGroupRequest(group_key=key)))
    assert (counts(got.group), got.group.total, got.group.done) == ({"SUCCEEDED": 10, "SCHEDULED": 9_990}, 10_000, False)
    cancel, cancel_took = await timed(system.api.CancelGroup(api.CancelGroupRequest(group_key=key)))
    assert (cancel.cancelled, counts(cancel.group), cancel.group.done) == (9_990, {"SUCCEEDED": 10, "CANCELLED": 9_990}, True)
    again, again_took = await timed(system.api.GetGroup(api.GetGroupRequest(group_key=key)))
    assert counts(again.group) == {"SUCCEEDED": 10, "CANCELLED": 9_990}
    print(f"\ngroup of 10,000 on SQLite: GetGroup {took * 1000:.1f} ms, CancelGroup {cancel_took * 1000:.1f} ms,"
          f" GetGroup after {again_took * 1000:.1f} ms")


BAD_KEYS = {"empty": "", "space": "order 42", "too long": "g" * 201, "newline": "order-42\n", "control": "a\x00b"}


@pytest.mark.parametrize("key", list(BAD_KEYS.values()), ids=list(BAD_KEYS))
async def test_bad_group_keys_are_invalid_argument(system, key):
    calls = {
        "group_key": system.api.GetGroup(api.GetGroupRequest(group_key=key)),
        "group_key ": system.api.CancelGroup(api.CancelGroupRequest(group_key=key)),
    }
    if key:
        calls["group_key  "] = system.api.ListNotifies(api.ListNotifiesRequest(group_key=key))
        calls["group_key   "] = system.api.BatchCreateNotify(
            api.BatchCreateNotifyRequest(requests=[member("http://127.0.0.1:9/x")], group_key=key))
        calls["requests[1].notify.group_key"] = system.api.BatchCreateNotify(
            api.BatchCreateNotifyRequest(requests=[member("http://127.0.0.1:9/x"), member("http://127.0.0.1:9/x", group_key=key)]))
    for field, call in calls.items():
        with pytest.raises(grpc.RpcError) as e:
            await call
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field.strip() in violations(e.value)
    assert list((await system.api.ListNotifies(api.ListNotifiesRequest())).notifies) == []


async def test_bad_group_batches_are_invalid_argument_and_change_nothing(system):
    cases = {
        "group_callback_url": api.BatchCreateNotifyRequest(
            requests=[member("http://127.0.0.1:9/x")], group_callback_url="http://127.0.0.1:9/done"),
        "group_callback_url ": api.BatchCreateNotifyRequest(
            requests=[member("http://127.0.0.1:9/x")], group_key="g", group_callback_url="gopher://x"),
        "requests[1].notify.group_key": api.BatchCreateNotifyRequest(
            requests=[member("http://127.0.0.1:9/x"), member("http://127.0.0.1:9/x", group_key="other")], group_key="g"),
    }  # fmt: skip
    for field, req in cases.items():
        with pytest.raises(grpc.RpcError) as e:
            await system.api.BatchCreateNotify(req)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field.strip() in violations(e.value)
    assert list((await system.api.ListNotifies(api.ListNotifiesRequest())).notifies) == []
    with pytest.raises(grpc.RpcError) as e:
        await system.api.GetGroup(api.GetGroupRequest(group_key="g"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_cli_sends_into_a_group_and_shows_it(tmp_path, target):
    from test_processes import cli, dev

    port = free_port()
    proc = dev(tmp_path, port).start()
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=proc)
        for path in ("/a", "/b"):
            sent = await asyncio.to_thread(cli, port, "send", target.url(path), "--group", "order-42")
            assert sent.returncode == 0, sent.stderr
            assert json.loads(sent.stdout)["notify"]["groupKey"] == "order-42"
        later = await asyncio.to_thread(cli, port, "send", target.url("/later"), "--group", "order-42", "--delay", "1h")
        await target.wait_for(2)
        listed = json.loads((await asyncio.to_thread(cli, port, "list", "--group", "order-42")).stdout)
        assert len(listed["notifies"]) == 3
        async with open_channel(f"127.0.0.1:{port}") as channel:
            await wait_until_counts(notify_service_pb2_grpc.NotifyServiceStub(channel), "order-42",
                                    {"SUCCEEDED": 2, "SCHEDULED": 1})  # fmt: skip
        shown = json.loads((await asyncio.to_thread(cli, port, "group", "order-42")).stdout)["group"]
        assert shown["counts"] == [{"state": "STATE_SCHEDULED", "count": 1}, {"state": "STATE_SUCCEEDED", "count": 2}]
        assert (shown["total"], shown["done"]) == (3, False)
        cancelled = json.loads((await asyncio.to_thread(cli, port, "group", "order-42", "--cancel")).stdout)
        assert cancelled["cancelled"] == 1 and cancelled["group"]["done"] is True
        assert json.loads(later.stdout)["notify"]["id"] not in target.ids()
        bad = await asyncio.to_thread(cli, port, "group", "no such group!")
        assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "group_key" in bad.stderr
    finally:
        proc.terminate()


async def test_cancel_group_drops_due_members_from_memory_so_none_is_sent(system, target):
    from notifyagent.v1 import admin_service_pb2 as admin_pb

    await system.admin.PauseQueue(admin_pb.PauseQueueRequest(name="held"))
    batch = api.BatchCreateNotifyRequest(requests=[member(target.url("/held"), queue="held") for _ in range(4)], group_key="due")
    created = (await system.api.BatchCreateNotify(batch)).notifies
    assert system.scheduler.engine.snapshot().ready == 4  # due, waiting for the paused queue
    assert (await system.api.CancelGroup(api.CancelGroupRequest(group_key="due"))).cancelled == 4
    await system.admin.ResumeQueue(admin_pb.ResumeQueueRequest(name="held"))
    await asyncio.sleep(0.3)
    assert target.received == []
    assert [system.scheduler.engine.held(n.id) for n in created] == [None] * 4


async def test_the_group_callback_survives_a_sigkill_and_stays_one_notify(tmp_path, target):
    from test_processes import dev

    target.respond("/group-done", 503, 200)  # the first try fails: the callback waits to retry when the kill comes
    port = free_port()
    first = dev(tmp_path, port, "first").start()
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=first)
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = notify_service_pb2_grpc.NotifyServiceStub(channel)
            await stub.BatchCreateNotify(api.BatchCreateNotifyRequest(
                requests=[member(target.url("/m")) for _ in range(3)], group_key="durable",
                group_callback_url=target.url("/group-done")))  # fmt: skip
            await target.wait_for(4)
        await asyncio.sleep(0.2)
        first.kill()  # SIGKILL
    finally:
        first.kill()
    second = dev(tmp_path, port, "second").start()
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=second)
        await target.wait_for(5, timeout=20)
        calls = [r for r in target.received if r.path == "/group-done"]
        assert len(calls) == 2 and calls[0].headers["Notify-Id"] == calls[1].headers["Notify-Id"]
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = notify_service_pb2_grpc.NotifyServiceStub(channel)
            group = (await stub.GetGroup(api.GetGroupRequest(group_key="durable"))).group
            assert group.callback_notify_id == calls[0].headers["Notify-Id"]
            made = await wait_notify_state(stub, group.callback_notify_id, pb.STATE_SUCCEEDED)
        assert made.state == pb.STATE_SUCCEEDED and made.attempts[-1].status_code == 200
        await asyncio.sleep(0.5)
        assert len([r for r in target.received if r.path == "/group-done"]) == 2
    finally:
        second.terminate()
