"""Bad input gets INVALID_ARGUMENT with field violations, changes nothing, and the server stays healthy."""

import random
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api


def _req(url="http://127.0.0.1:9/x", **request_fields):
    return pb.HttpRequest(method=request_fields.pop("method", pb.HTTP_METHOD_POST), url=url, **request_fields)


def _delay(ms):
    n = pb.Notify(request=_req())
    n.delay.FromMilliseconds(ms)
    return n


def _at(offset_s):
    n = pb.Notify(request=_req())
    n.deliver_at.FromMilliseconds(int((time.time() + offset_s) * 1000))
    return n


def _retry(**kw):
    return pb.Notify(request=_req(), retry=pb.RetryPolicy(**kw))


def _timeout(ms):
    n = pb.Notify(request=_req())
    n.timeout.FromMilliseconds(ms)
    return n


BAD = {
    "bad scheme": (pb.Notify(request=_req("ftp://example.com/x")), "notify.request.url"),
    "unparsable url": (pb.Notify(request=_req("http://[::1/x")), "notify.request.url"),
    "url with spaces": (pb.Notify(request=_req("http://exa mple.com/")), "notify.request.url"),
    "empty url": (pb.Notify(request=_req("")), "notify.request.url"),
    "url without host": (pb.Notify(request=_req("http:///path")), "notify.request.url"),
    "header name with control character": (pb.Notify(request=_req(headers={"X-A\x01": "v"})), "notify.request.headers['X-A\\x01']"),
    "header name with space": (pb.Notify(request=_req(headers={"X A": "v"})), "notify.request.headers['X A']"),
    "header value with newline": (pb.Notify(request=_req(headers={"X-A": "v\r\nInjected: 1"})), "notify.request.headers['X-A']"),
    "reserved header": (pb.Notify(request=_req(headers={"Host": "evil"})), "notify.request.headers['Host']"),
    "unknown method": (pb.Notify(request=_req(method=42)), "notify.request.method"),
    "negative delay": (_delay(-5000), "notify.delay"),
    "schedule too far ahead": (_at(400 * 86400), "notify.schedule"),
    "schedule in the far past": (_at(-3 * 86400), "notify.schedule"),
    "body over the limit": (pb.Notify(request=_req(body=b"x" * (1 << 20 + 1))), "notify.request.body"),
    "two bodies": (pb.Notify(request=_req(body=b"x", json_body="{}")), "notify.request.body"),
    "invalid json body": (pb.Notify(request=_req(json_body="{nope")), "notify.request.json_body"),
    "negative max attempts": (_retry(max_attempts=-1), "notify.retry.max_attempts"),
    "too many attempts": (_retry(max_attempts=5000), "notify.retry.max_attempts"),
    "multiplier below one": (_retry(multiplier=0.5), "notify.retry.multiplier"),
    "retry code not http": (_retry(retry_codes=[999]), "notify.retry.retry_codes"),
    "zero timeout": (_timeout(0), "notify.timeout"),
    "timeout too long": (_timeout(3_600_000), "notify.timeout"),
    "bad queue name": (pb.Notify(request=_req(), queue="has space"), "notify.queue"),
    "bad callback url": (pb.Notify(request=_req(), callback_url="gopher://x"), "notify.callback_url"),
    "bad group key": (pb.Notify(request=_req(), group_key="order 42"), "notify.group_key"),
    "group key too long": (pb.Notify(request=_req(), group_key="g" * 201), "notify.group_key"),
    "group key with a trailing newline": (pb.Notify(request=_req(), group_key="order-42\n"), "notify.group_key"),
}


def violations(err: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)
    out = {}
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        assert detail.Unpack(bad)
        out.update({v.field: v.description for v in bad.field_violations})
    return out


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
async def test_bad_input_is_invalid_argument_names_the_field_and_changes_nothing(system, case):
    notify, field = BAD[case]
    with pytest.raises(grpc.RpcError) as e:
        await system.api.CreateNotify(api.CreateNotifyRequest(notify=notify, request_id="r-" + case))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(e.value)
    assert field in found, found
    assert found[field], "a violation says what is wrong"
    assert list((await system.api.ListNotifies(api.ListNotifiesRequest())).notifies) == []
    assert await system.serving()


async def test_one_bad_notify_in_a_batch_rejects_the_whole_batch(system):
    good = api.CreateNotifyRequest(notify=pb.Notify(request=_req()))
    bad = api.CreateNotifyRequest(notify=pb.Notify(request=_req("nope://x")))
    with pytest.raises(grpc.RpcError) as e:
        await system.api.BatchCreateNotify(api.BatchCreateNotifyRequest(requests=[good, bad]))
    assert "requests[1].notify.request.url" in violations(e.value)
    assert list((await system.api.ListNotifies(api.ListNotifiesRequest())).notifies) == []


async def test_trigger_without_a_key_and_bad_page_token_are_invalid(system):
    for call in (
        system.api.Trigger(api.TriggerRequest(trigger_key="")),
        system.api.ListNotifies(api.ListNotifiesRequest(page_token="garbage")),
        system.api.ListNotifies(api.ListNotifiesRequest(page_size=5000)),
        system.api.GetNotify(api.GetNotifyRequest(id="")),
    ):
        with pytest.raises(grpc.RpcError) as e:
            await call
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("label", ["=x", "=", "k" * 64, "k" * 64 + "=v", "k=" + "v" * 257, "k=a\x00b", "k\n=v"])
async def test_label_filter_out_of_bounds_is_invalid_argument(system, label):
    with pytest.raises(grpc.RpcError) as e:
        await system.api.ListNotifies(api.ListNotifiesRequest(label=label))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "label" in violations(e.value)


async def test_label_filter_fuzz_answers_matches_or_invalid_argument_only(system):
    rng = random.Random(13)
    alphabet = "ab=é🙂'\"\\%_.$ \x00\x1f\x7f\n{}[]"
    labels = {"a": "b", "a=b": "=", "é": "🙂", "'": '"'}
    n = await system.create("http://127.0.0.1:9/x", trigger_key="never", labels=labels)
    for _ in range(300):
        label = "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 2, 3, 8, 70, 300])))
        try:
            found = [m.id for m in (await system.api.ListNotifies(api.ListNotifiesRequest(label=label))).notifies]
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "label" in violations(e), label
            continue
        key, eq, value = label.partition("=")
        expected = not label or (key in labels and (not eq or labels[key] == value))
        assert found == ([n.id] if expected else []), label


@pytest.mark.parametrize("request_id", ["x" * 257, "a\x00b", "tab\there"])
async def test_bad_request_id_is_invalid_argument(system, request_id):
    with pytest.raises(grpc.RpcError) as e:
        await system.api.CreateNotify(api.CreateNotifyRequest(notify=pb.Notify(request=_req()), request_id=request_id))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in violations(e.value)
