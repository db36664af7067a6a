"""The HTTP/JSON API on NOTIFY_HTTP_ADDR: every route, its errors with details, and the same
notifies as gRPC (created over one, read over the other)."""

from __future__ import annotations

import io
import json
import random

import aiohttp
import pytest

from notifyagent.scheduler.api.http import ROUTES, body_limit
from notifyagent.v1 import admin_service_pb2, notify_pb2 as pb, notify_service_pb2 as api
from support import System, settings_for

BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


@pytest.fixture
async def web(tmp_path):
    s = System(settings_for(tmp_path, http_addr="127.0.0.1:0"))
    await s.start()
    s.base = f"http://{s.scheduler.http_address}"
    async with aiohttp.ClientSession() as session:
        s.http = session
        yield s
    await s.stop()


async def call(s: System, method: str, path: str, body=None, *, raw: bytes | None = None) -> tuple[int, dict]:
    data = io.BytesIO(raw) if raw is not None else (None if body is None else json.dumps(body))
    async with s.http.request(method, s.base + path, data=data, headers={"Content-Type": "application/json"}) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


def violations(doc: dict) -> list[tuple[str, str]]:
    out = []
    for detail in doc["error"]["details"]:
        assert detail["@type"] == BAD_REQUEST
        out += [(v["field"], v["description"]) for v in detail["field_violations"]]
    return out


def assert_error(status: int, doc: dict, http: int, code: str) -> None:
    assert status == http, doc
    assert set(doc) == {"error"} and doc["error"]["code"] == http and doc["error"]["status"] == code, doc
    assert doc["error"]["message"] and isinstance(doc["error"]["details"], list)


async def test_created_over_http_reads_over_grpc_and_back(web, target):
    status, doc = await call(web, "POST", "/v1/notifies", {
        "notify": {"request": {"method": "HTTP_METHOD_POST", "url": target.url("/h"), "jsonBody": '{"a": 1}'}},
        "requestId": "order-1",
    })  # fmt: skip
    assert status == 200, doc
    made = doc["notify"]
    assert made["request"]["json_body"] == '{"a": 1}' and made["queue"] == "default"  # proto field names out
    assert made["ordering_key"] == "" and made["labels"] == {}  # zero values included
    await target.wait_for(1)
    assert target.received[0].body == b'{"a": 1}'
    got = (await web.api.GetNotify(api.GetNotifyRequest(id=made["id"]))).notify
    assert got.request.url == target.url("/h") and got.request.json_body == '{"a": 1}'
    # the same request_id over HTTP (the other spelling) answers the first notify
    status, again = await call(web, "POST", "/v1/notifies", {"notify": {"request": {"url": target.url("/other")}}, "request_id": "order-1"})
    assert status == 200 and again["notify"]["id"] == made["id"]

    n = pb.Notify(request=pb.HttpRequest(url=target.url("/g")), trigger_key="k1", labels={"team": "a"})
    by_grpc = (await web.api.CreateNotify(api.CreateNotifyRequest(notify=n))).notify
    status, doc = await call(web, "GET", f"/v1/notifies/{by_grpc.id}")
    assert status == 200 and doc["notify"]["trigger_key"] == "k1" and doc["notify"]["labels"] == {"team": "a"}
    assert doc["notify"]["state"] == "STATE_WAITING_TRIGGER"


async def test_bad_input_gets_the_same_error_and_violations_as_grpc(web):
    status, doc = await call(web, "POST", "/v1/notifies", {"notify": {"request": {"url": "ftp://x"}}})
    assert_error(status, doc, 400, "INVALID_ARGUMENT")
    assert [f for f, _ in violations(doc)] == ["notify.request.url"]
    with pytest.raises(Exception) as grpc_error:
        await web.api.CreateNotify(api.CreateNotifyRequest(notify=pb.Notify(request=pb.HttpRequest(url="ftp://x"))))
    assert grpc_error.value.details() == doc["error"]["message"]


async def test_batch_create_makes_every_notify_or_none(web, target):
    ok = {"requests": [{"notify": {"request": {"url": target.url(f"/{i}")}, "delay": "3600s"}} for i in range(3)]}
    status, doc = await call(web, "POST", "/v1/notifies:batchCreate", ok)
    assert status == 200 and len(doc["notifies"]) == 3
    bad = {"requests": [{"notify": {"request": {"url": target.url("/fine")}}}, {"notify": {"request": {"url": "nope"}}}]}
    status, doc = await call(web, "POST", "/v1/notifies:batchCreate", bad)
    assert_error(status, doc, 400, "INVALID_ARGUMENT")
    assert [f for f, _ in violations(doc)] == ["requests[1].notify.request.url"]
    status, doc = await call(web, "POST", "/v1/notifies:batchCreate", {"requests": []})
    assert_error(status, doc, 400, "INVALID_ARGUMENT")
    assert violations(doc)[0][0] == "requests"
    status, listed = await call(web, "GET", "/v1/notifies")
    assert len(listed["notifies"]) == 3


async def test_get_an_unknown_notify_is_404(web):
    status, doc = await call(web, "GET", "/v1/notifies/01NOSUCHNOTIFY")
    assert_error(status, doc, 404, "NOT_FOUND")


async def test_list_filters_and_pages(web, target):
    for i in range(3):
        await call(web, "POST", "/v1/notifies", {"notify": {"request": {"url": target.url()}, "trigger_key": "deploy"}})
    await call(web, "POST", "/v1/notifies", {"notify": {"request": {"url": target.url()}, "delay": "3600s", "queue": "mail"}})
    status, doc = await call(web, "GET", "/v1/notifies?state=WAITING_TRIGGER&trigger_key=deploy&page_size=2")
    assert status == 200 and len(doc["notifies"]) == 2 and doc["next_page_token"]
    status, rest = await call(web, "GET", f"/v1/notifies?state=STATE_WAITING_TRIGGER&triggerKey=deploy&pageSize=2&page_token={doc['next_page_token']}")
    assert status == 200 and len(rest["notifies"]) == 1 and rest["next_page_token"] == ""
    status, mail = await call(web, "GET", "/v1/notifies?queue=mail")
    assert [n["queue"] for n in mail["notifies"]] == ["mail"]

    status, doc = await call(web, "GET", "/v1/notifies?page_size=5000")
    assert_error(status, doc, 400, "INVALID_ARGUMENT")
    assert violations(doc)[0][0] == "page_size"
    status, doc = await call(web, "GET", "/v1/notifies?page_token=forged")
    assert_error(status, doc, 400, "INVALID_ARGUMENT")
    assert violations(doc)[0][0] == "page_token"
    status, doc = await call(web, "GET", "/v1/notifies?state=SLEEPING")
    assert_error(status, doc, 400, "INVALID_ARGUMENT")
    status, doc = await call(web, "GET", "/v1/notifies?colour=red")
    assert_error(status, doc, 400, "INVALID_ARGUMENT")
    assert violations(doc)[0][0] == "colour"


async def test_cancel_then_retry(web, target):
    _, doc = await call(web, "POST", "/v1/notifies", {"notify": {"request": {"url": target.url("/later")}, "delay": "3600s"}})
    nid = doc["notify"]["id"]
    status, doc = await call(web, "POST", f"/v1/notifies/{nid}:retry")
    assert_error(status, doc, 400, "FAILED_PRECONDITION")  # not finished yet
    status, doc = await call(web, "POST", f"/v1/notifies/{nid}:cancel", {})
    assert status == 200 and doc["notify"]["state"] == "STATE_CANCELLED"
    status, doc = await call(web, "POST", f"/v1/notifies/{nid}:cancel")
    assert_error(status, doc, 400, "FAILED_PRECONDITION")
    status, doc = await call(web, "POST", f"/v1/notifies/{nid}:retry")
    assert status == 200 and doc["notify"]["state"] in ("STATE_PENDING", "STATE_DELIVERING", "STATE_SUCCEEDED")
    await target.wait_for(1)
    status, doc = await call(web, "POST", "/v1/notifies/01NOSUCH:cancel")
    assert_error(status, doc, 404, "NOT_FOUND")


async def test_patch_updates_the_fields_in_update_mask(web, target):
    _, doc = await call(web, "POST", "/v1/notifies", {"notify": {"request": {"url": target.url("/a")}, "delay": "3600s"}})
    nid = doc["notify"]["id"]
    status, doc = await call(web, "PATCH", f"/v1/notifies/{nid}?update_mask=labels,fireAndForget",
                             {"labels": {"k": "v"}, "fire_and_forget": True, "queue": "ignored"})
    assert status == 200, doc
    assert doc["notify"]["labels"] == {"k": "v"} and doc["notify"]["fire_and_forget"] is True
    assert doc["notify"]["queue"] == "default"
    status, doc = await call(web, "PATCH", f"/v1/notifies/{nid}?update_mask=request", {"request": {"url": "gopher://x"}})
    assert_error(status, doc, 400, "INVALID_ARGUMENT")
    assert violations(doc)[0][0] == "notify.request.url"
    status, doc = await call(web, "PATCH", f"/v1/notifies/{nid}?update_mask=labels", {"labels": "not a map"})
    assert_error(status, doc, 400, "INVALID_ARGUMENT")
    assert violations(doc)[0][0].startswith("notify.labels")
    status, doc = await call(web, "PATCH", "/v1/notifies/01NOSUCH?update_mask=labels", {"labels": {}})
    assert_error(status, doc, 404, "NOT_FOUND")


async def test_trigger_fires_what_waits_on_the_key(web, target):
    for _ in range(2):
        await call(web, "POST", "/v1/notifies", {"notify": {"request": {"url": target.url("/t")}, "triggerKey": "go"}})
    status, doc = await call(web, "POST", "/v1/notifies:trigger", {"trigger_key": "go", "delay": "0.1s"})
    assert status == 200 and doc == {"triggered": 2}
    await target.wait_for(2)
    status, doc = await call(web, "POST", "/v1/notifies:trigger", {"trigger_key": "go"})
    assert doc == {"triggered": 0}  # zero values included
    status, doc = await call(web, "POST", "/v1/notifies:trigger", {"trigger_key": "go", "delay": "soon"})
    assert_error(status, doc, 400, "INVALID_ARGUMENT")
    assert violations(doc)[0][0] == "delay"


async def test_status_answers_getstatus(web):
    status, doc = await call(web, "GET", "/v1/status")
    assert status == 200
    grpc_status = await web.admin.GetStatus(admin_service_pb2.GetStatusRequest())
    assert int(doc["pid"]) == grpc_status.pid and len(doc["dispatchers"]) == 1 and "sent_ok" in doc


async def test_malformed_requests_get_google_style_errors(web):
    status, doc = await call(web, "POST", "/v1/notifies", raw=b"{not json")
    assert_error(status, doc, 400, "INVALID_ARGUMENT")
    assert violations(doc)[0][0] == "body"
    status, doc = await call(web, "POST", "/v1/notifies", raw=b"\xff\xfe")
    assert_error(status, doc, 400, "INVALID_ARGUMENT")
    status, doc = await call(web, "POST", "/v1/notifies", {"notify": {"request": {"url": 5}}})
    assert_error(status, doc, 400, "INVALID_ARGUMENT")
    assert violations(doc)[0][0] == "notify.request.url"
    status, doc = await call(web, "POST", "/v1/notifies", {"notify": {"colour": "red"}})
    assert_error(status, doc, 400, "INVALID_ARGUMENT")
    status, doc = await call(web, "POST", "/v1/notifies", raw=b"[" * 100_000 + b"]" * 100_000)
    assert_error(status, doc, 400, "INVALID_ARGUMENT")
    status, doc = await call(web, "GET", "/v1/nothing-here")
    assert_error(status, doc, 404, "NOT_FOUND")
    status, doc = await call(web, "DELETE", "/v1/notifies/abc")
    assert_error(status, doc, 405, "UNIMPLEMENTED")
    status, doc = await call(web, "GET", "/v1/notifies?" + "&".join(f"p{i}=1" for i in range(40)))
    assert_error(status, doc, 400, "INVALID_ARGUMENT")


async def test_a_body_over_the_bound_is_refused_with_413(web):
    limit = body_limit(web.settings.max_body_bytes)
    status, doc = await call(web, "POST", "/v1/notifies", raw=b" " * (limit + 1))
    assert_error(status, doc, 413, "INVALID_ARGUMENT")
    assert violations(doc)[0][0] == "body"
    status, _ = await call(web, "GET", "/v1/status")  # the server is fine afterwards
    assert status == 200


async def test_fuzz_every_route_answers_json_and_never_500(web):
    rng = random.Random(1234)
    pieces = [b"{", b"}", b"[", b"]", b'"notify"', b'"request"', b'"url"', b":", b",", b'"x"', b"1e999", b"null",
              b"true", b'"\\u0000"', b'"requests"', b'"delay"', b'"-5s"', b'"trigger_key"', b"\xff", b'"labels"']  # fmt: skip
    for _ in range(300):
        route = rng.choice(ROUTES)
        path = route.pattern.pattern.strip("^$").replace("(?P<id>[^/:]{1,256})", rng.choice(["abc", "%00", "x" * 300, "a%2Fb"]))
        if rng.random() < 0.3:
            path += "?" + rng.choice(["state=1", "page_size=-1", "update_mask=a,,b", "page_size=x", "state=99", "queue=%ff"])
        body = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 30)))
        async with web.http.request(route.method, web.base + path, data=body) as resp:
            assert resp.status < 500, (route.rpc, path, body, await resp.text())
            doc = await resp.json()
            if resp.status >= 400:
                assert doc["error"]["code"] == resp.status and doc["error"]["status"], doc
    status, _ = await call(web, "GET", "/v1/status")
    assert status == 200


async def test_health_and_metrics_stay_on_the_same_address(web):
    async with web.http.get(web.base + "/healthz") as resp:
        assert resp.status == 200
    async with web.http.get(web.base + "/metrics") as resp:
        assert resp.status == 200 and "notifyagent_sent_ok" in await resp.text()


async def test_groups_read_and_cancel_over_http(web, target):
    batch = {"requests": [{"notify": {"request": {"url": target.url(f"/g{i}")}, "delay": "3600s"}} for i in range(2)],
             "group_key": "order:42"}  # fmt: skip
    status, doc = await call(web, "POST", "/v1/notifies:batchCreate", batch)
    assert status == 200, doc
    status, doc = await call(web, "GET", "/v1/groups/order:42")
    assert status == 200 and doc["group"]["group_key"] == "order:42" and doc["group"]["total"] == 2
    status, doc = await call(web, "GET", "/v1/notifies?group_key=order:42")
    assert len(doc["notifies"]) == 2
    status, doc = await call(web, "POST", "/v1/groups/order:42:cancel")
    assert status == 200 and doc["cancelled"] == 2 and doc["group"]["done"] is True
    status, doc = await call(web, "GET", "/v1/groups/" + "k" * 2000)
    assert_error(status, doc, 404, "NOT_FOUND")
