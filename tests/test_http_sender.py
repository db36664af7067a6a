"""HttpSender against real aiohttp servers on 127.0.0.1 (port 0)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email.utils
import hashlib
import hmac
import socket
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from notifyagent.dispatcher.call import CallOutcome, ErrorKind, OutgoingCall
from notifyagent.dispatcher.guard import NetworkPolicy
from notifyagent.dispatcher.http import HttpSender, parse_retry_after
from notifyagent.dispatcher.signing import parse_secret, sign

LOOPBACK = NetworkPolicy.from_csv("127.0.0.0/8,::1/128")
HUGE_CHUNK = 64 * 1024
HUGE_CHUNKS = 320  # 20 MiB, paced so that sending all of it takes over 3 s
SEEN = web.AppKey("seen", list)


def make_call(url: str, **changes: object) -> OutgoingCall:
    call = OutgoingCall(
        notify_id="01J0NOTIFYID",
        attempt=1,
        method="POST",
        url=url,
        headers={},
        body=b"",
        query={},
        timeout=10.0,
        success_codes=(),
        body_contains="",
        fire_and_forget=False,
    )
    return dataclasses.replace(call, **changes)


# -- the target -------------------------------------------------------------


async def record(request: web.Request) -> web.Response:
    request.app[SEEN].append(
        {
            "method": request.method,
            "query_string": request.query_string,
            "query": request.query.copy(),
            "headers": request.headers.copy(),
            "body": await request.read(),
        }
    )
    code = int(request.match_info.get("code", "200"))
    return web.Response(status=code, body=f"status {code} from target".encode())


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(60)
    return web.Response(text="too late")


async def slow_body(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(status=200)
    await resp.prepare(request)
    await resp.write(b"partial ")
    await asyncio.sleep(60)
    return resp


async def huge(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(status=200)
    resp.content_length = HUGE_CHUNK * HUGE_CHUNKS
    await resp.prepare(request)
    try:
        for _ in range(HUGE_CHUNKS):
            await resp.write(b"x" * HUGE_CHUNK)
            await asyncio.sleep(0.01)
    except ConnectionResetError:
        pass
    return resp


async def retry_later(request: web.Request) -> web.Response:
    return web.Response(status=429, headers={"Retry-After": request.query["value"]})


@pytest.fixture
async def target():
    app = web.Application()
    app[SEEN] = []
    app.router.add_route("*", "/echo", record)
    app.router.add_route("*", "/status/{code}", record)
    app.router.add_get("/slow", slow)
    app.router.add_get("/slow-body", slow_body)
    app.router.add_get("/huge", huge)
    app.router.add_get("/retry-later", retry_later)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
async def sender():
    async with HttpSender(policy=LOOPBACK) as s:
        yield s


def seen(server: TestServer) -> list[dict]:
    return server.app[SEEN]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- what arrives -----------------------------------------------------------


async def test_body_bytes_and_notify_headers_arrive_exactly(target, sender):
    body = b'{"b": 1,  "a":[1,2]}\xff\x00 trailing'  # odd spacing, not even UTF-8
    call = make_call(
        str(target.make_url("/echo")),
        attempt=3,
        body=body,
        headers={"Content-Type": "application/json; charset=utf-8", "X-Trace": "abc"},
    )
    outcome = await sender.send(call)
    assert outcome.success, outcome.error
    (req,) = seen(target)
    assert req["body"] == body
    assert req["headers"]["Content-Type"] == "application/json; charset=utf-8"
    assert req["headers"]["Content-Length"] == str(len(body))
    assert req["headers"]["X-Trace"] == "abc"
    assert req["headers"].getall("Notify-Id") == ["01J0NOTIFYID"]
    assert req["headers"].getall("Notify-Attempt") == ["3"]
    assert req["headers"].getall("Idempotency-Key") == ["01J0NOTIFYID"]
    assert req["headers"]["User-Agent"] == "NotifyAgent/0.1"
    assert "webhook-signature" not in req["headers"]


async def test_caller_wins_for_user_agent_but_never_for_notify_headers(target, sender):
    call = make_call(
        str(target.make_url("/echo")),
        headers={
            "user-agent": "billing/2.1",
            "notify-id": "spoofed",
            "NOTIFY-ATTEMPT": "99",
            "idempotency-key": "mine",
            "Content-Length": "9999",
        },
        body=b"abc",
    )
    assert (await sender.send(call)).success
    headers = seen(target)[0]["headers"]
    assert headers.getall("User-Agent") == ["billing/2.1"]
    assert headers.getall("Notify-Id") == ["01J0NOTIFYID"]
    assert headers.getall("Notify-Attempt") == ["1"]
    assert headers.getall("Idempotency-Key") == ["01J0NOTIFYID"]
    assert headers["Content-Length"] == "3"


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])
async def test_every_method_is_sent_as_asked(target, sender, method):
    outcome = await sender.send(make_call(str(target.make_url("/echo")), method=method))
    assert outcome.success, outcome.error
    assert seen(target)[0]["method"] == method


async def test_no_content_answer_succeeds_with_empty_snippet(target, sender):
    outcome = await sender.send(make_call(str(target.make_url("/status/204"))))
    assert (outcome.status_code, outcome.success, outcome.snippet) == (204, True, b"")


async def test_head_answer_has_empty_snippet(target, sender):
    outcome = await sender.send(make_call(str(target.make_url("/echo")), method="HEAD"))
    assert (outcome.status_code, outcome.snippet) == (200, b"")


async def test_empty_body_gets_no_content_type(target, sender):
    await sender.send(make_call(str(target.make_url("/echo")), method="POST"))
    assert "Content-Type" not in seen(target)[0]["headers"]


async def test_non_empty_body_without_content_type_is_octet_stream(target, sender):
    await sender.send(make_call(str(target.make_url("/echo")), method="PUT", body=b"raw"))
    assert seen(target)[0]["headers"]["Content-Type"] == "application/octet-stream"


async def test_query_params_are_appended_to_the_urls_own_query(target, sender):
    url = str(target.make_url("/echo")) + "?a=1"
    call = make_call(url, method="GET", query={"b": "x y", "a": "2"})
    assert (await sender.send(call)).success
    req = seen(target)[0]
    assert req["query_string"].startswith("a=1&")
    assert req["query"].getall("a") == ["1", "2"]
    assert req["query"]["b"] == "x y"


async def test_redirects_are_answers_not_followed(target, sender):
    outcome = await sender.send(make_call(str(target.make_url("/status/302"))))
    assert (outcome.status_code, outcome.success, outcome.error) == (302, False, "HTTP 302")
    assert len(seen(target)) == 1


# -- success criteria -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "changes", "success", "error"),
    [
        ("/status/201", {}, True, ""),
        ("/status/500", {}, False, "HTTP 500"),
        ("/status/404", {}, False, "HTTP 404"),
        ("/status/202", {"success_codes": (200,)}, False, "HTTP 202"),
        ("/status/409", {"success_codes": (200, 409)}, True, ""),
        ("/status/500", {"fire_and_forget": True}, True, ""),
        ("/status/200", {"body_contains": "from target"}, True, ""),
        (
            "/status/200",
            {"body_contains": "OK"},
            False,
            "HTTP 200 but the body does not contain 'OK' (searched the first 22 bytes)",
        ),
        ("/status/500", {"body_contains": "from target"}, False, "HTTP 500"),
    ],
)
async def test_success_criteria(target, sender, path, changes, success, error):
    outcome = await sender.send(make_call(str(target.make_url(path)), **changes))
    assert (outcome.success, outcome.error) == (success, error)
    assert outcome.error_kind is ErrorKind.NONE
    assert not outcome.retryable  # answered: the scheduler decides from the status
    assert outcome.snippet.startswith(b"status ")


# -- failures without an answer ---------------------------------------------


async def test_timeout_is_reported_promptly_with_a_clear_message(target, sender):
    started = time.monotonic()
    call = make_call(str(target.make_url("/slow")), method="GET", timeout=0.5)
    outcome = await sender.send(call)
    elapsed = time.monotonic() - started
    assert outcome.error_kind is ErrorKind.TIMEOUT
    assert outcome.error == "timed out after 0.5 s"
    assert (outcome.status_code, outcome.success, outcome.retryable) == (0, False, True)
    assert 0.4 < elapsed < 1.5
    assert 0.4 < outcome.end_time - outcome.start_time < 1.5


async def test_body_read_timeout_fails_a_call_that_needs_the_body(target, sender):
    call = make_call(
        str(target.make_url("/slow-body")), method="GET", timeout=0.5, body_contains="done"
    )
    outcome = await sender.send(call)
    assert (outcome.status_code, outcome.success) == (200, False)
    assert outcome.error_kind is ErrorKind.TIMEOUT
    assert outcome.error == "HTTP 200, then reading the body: timed out after 0.5 s"
    assert outcome.snippet == b"partial "


async def test_body_read_timeout_does_not_fail_a_call_judged_on_status(target, sender):
    call = make_call(str(target.make_url("/slow-body")), method="GET", timeout=0.5)
    outcome = await sender.send(call)
    assert (outcome.status_code, outcome.success, outcome.error) == (200, True, "")
    assert outcome.snippet == b"partial "


async def test_connection_refused_is_a_retryable_connect_error(sender):
    port = free_port()
    outcome = await sender.send(make_call(f"http://127.0.0.1:{port}/x"))
    assert outcome.error_kind is ErrorKind.CONNECT
    assert outcome.error.startswith(f"connect failed: 127.0.0.1:{port}: ")
    assert (outcome.status_code, outcome.success, outcome.retryable) == (0, False, True)


async def test_huge_response_is_not_read_whole(target, sender):
    started = time.monotonic()
    call = make_call(str(target.make_url("/huge")), method="GET", body_contains="needle")
    outcome = await sender.send(call)
    elapsed = time.monotonic() - started
    assert outcome.status_code == 200
    assert outcome.snippet == b"x" * 4096
    assert outcome.error.endswith("(searched the first 65536 bytes)")
    assert elapsed < 2.0  # the server needs over 3 s to send all 20 MiB


async def test_cancellation_propagates(target, sender):
    task = asyncio.create_task(
        sender.send(make_call(str(target.make_url("/slow")), method="GET", timeout=30))
    )
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_invalid_url_is_a_non_retryable_outcome(sender):
    outcome = await sender.send(make_call("ftp://127.0.0.1/file"))
    assert outcome.error_kind is ErrorKind.BLOCKED
    assert outcome.error.startswith("invalid url: ")
    assert not outcome.retryable


async def test_send_before_start_is_a_programming_error():
    with pytest.raises(RuntimeError, match="start"):
        await HttpSender(policy=LOOPBACK).send(make_call("http://127.0.0.1/"))


async def test_close_is_idempotent():
    sender = HttpSender(policy=LOOPBACK)
    await sender.close()
    await sender.start()
    await sender.close()
    await sender.close()


# -- Retry-After ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Thu, 01 Jan 2015 00:02:00 GMT", 120.0),
        ("Wed, 31 Dec 2014 23:00:00 GMT", 0.0),  # in the past: retry now
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_parses_seconds_and_http_dates(value, expected):
    now = 1420070400.0  # 2015-01-01T00:00:00Z
    assert parse_retry_after(value, now=now) == expected


async def test_retry_after_seconds_reach_the_outcome(target, sender):
    url = str(target.make_url("/retry-later")) + "?value=7"
    outcome = await sender.send(make_call(url, method="GET"))
    assert (outcome.status_code, outcome.error, outcome.retry_after) == (429, "HTTP 429", 7.0)


async def test_retry_after_http_date_reaches_the_outcome(target, sender):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    url = target.make_url("/retry-later").with_query(value=when)
    outcome = await sender.send(make_call(str(url), method="GET"))
    assert outcome.retry_after is not None and 25 < outcome.retry_after <= 30


# -- Standard Webhooks signing ---------------------------------------------


def test_signature_matches_the_standard_webhooks_test_vector():
    secret = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    headers = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert headers == {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }


def test_secret_prefix_is_optional():
    assert parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") == parse_secret(
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    )


@pytest.mark.parametrize("text", ["whsec_", "whsec_not base64!", ""])
def test_bad_secret_is_refused(text):
    with pytest.raises(ValueError, match="secret"):
        parse_secret(text)


async def test_signed_requests_verify_against_the_received_bytes(target):
    secret = b"0123456789abcdef0123456789abcdef"
    body = b'{"event": "paid", "amount": 12.50}'
    async with HttpSender(policy=LOOPBACK, signing_secret=secret) as sender:
        outcome = await sender.send(make_call(str(target.make_url("/echo")), body=body))
    assert outcome.success, outcome.error
    req = seen(target)[0]
    headers = req["headers"]
    assert headers["webhook-id"] == "01J0NOTIFYID"
    timestamp = headers["webhook-timestamp"]
    assert abs(int(timestamp) - time.time()) < 5
    signed = f"01J0NOTIFYID.{timestamp}.".encode() + req["body"]
    expected = base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"


def test_outcome_retryable_follows_the_error_kind():
    def outcome(kind: ErrorKind) -> CallOutcome:
        return CallOutcome(0, False, "x", kind, 0.0, 0.0, b"", None)

    retryable = {kind for kind in ErrorKind if outcome(kind).retryable}
    assert retryable == {ErrorKind.CONNECT, ErrorKind.TIMEOUT, ErrorKind.PROTOCOL, ErrorKind.DEFERRED}
