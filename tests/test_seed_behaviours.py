"""Behaviours users bring from the systems NotifyAgent replaces: "resend until the correct
answer", response headers kept per attempt, and the wheel size meaning what it says."""

import random

from notifyagent.dispatcher.call import MAX_HEADER_VALUE, MAX_HEADERS, MAX_HEADERS_TOTAL, capped_headers
from notifyagent.scheduler.engine.model import Success
from notifyagent.scheduler.engine.retry import Outcome, decide
from notifyagent.scheduler.engine.model import Notification, State
from notifyagent.v1 import admin_service_pb2 as admin, notify_pb2 as pb
from support import T0, fast_retry, spec


async def test_a_2xx_without_the_expected_body_is_retried_until_the_body_matches(system, target):
    target.respond("/eventually", 200, 200, 201)  # bodies "answer 200", "answer 200", "answer 201"
    n = await system.create(target.url("/eventually"), retry=fast_retry(max_attempts=5),
                            success=pb.SuccessCriteria(status_codes=[200, 201], body_contains="answer 201"))  # fmt: skip
    done = await system.wait_state(n.id, pb.STATE_SUCCEEDED)
    assert [(a.status_code, a.success) for a in done.attempts] == [(200, False), (200, False), (201, True)]
    assert "does not contain 'answer 201'" in done.attempts[0].error


async def test_a_body_mismatch_is_final_when_the_notify_says_so(system, target):
    n = await system.create(target.url("/ok"), retry=fast_retry(max_attempts=5),
                            success=pb.SuccessCriteria(body_contains="never", mismatch_final=True))  # fmt: skip
    done = await system.wait_state(n.id, pb.STATE_FAILED)
    assert len(done.attempts) == 1 and done.success.mismatch_final


def test_only_a_success_status_counts_as_a_body_mismatch():
    n = Notification(id="n1", spec=spec(success=Success((200,), "yes")), state=State.DELIVERING, create_ms=T0, attempt_count=1)
    assert decide(n, Outcome(200, False, "body"), T0, rand=0).state == State.RETRY_WAIT
    assert decide(n, Outcome(202, False, "HTTP 202"), T0, rand=0).state == State.FAILED, "202 is not a listed success"
    final = Notification(id="n2", spec=spec(success=Success((), "yes", True)), state=State.DELIVERING, create_ms=T0, attempt_count=1)
    assert decide(final, Outcome(204, False, "body"), T0, rand=0).state == State.FAILED


async def test_each_attempt_keeps_the_response_headers(system, target):
    n = await system.create(target.url("/h"))
    done = await system.wait_state(n.id, pb.STATE_SUCCEEDED)
    headers = dict(done.attempts[0].response_headers)
    assert headers["Content-Type"].startswith("text/plain") and headers["Content-Length"] == "10"


def test_response_headers_are_capped_in_count_value_and_total():
    many = [(f"X-H{i}", "v" * 1000) for i in range(100)]
    kept = capped_headers(many)
    assert len(kept) <= MAX_HEADERS and all(len(v) <= MAX_HEADER_VALUE for v in kept.values())
    assert sum(len(k) + len(v) for k, v in kept.items()) <= MAX_HEADERS_TOTAL
    assert capped_headers([("Set-Cookie", "a=1"), ("set-cookie", "b=2")]) == {"Set-Cookie": "a=1, b=2"}
    assert capped_headers([("X-Bad", "a\x00b\r\nc")]) == {"X-Bad": "abc"}


def test_capped_headers_fuzz_never_exceeds_the_bounds():
    rnd = random.Random(13)
    for _ in range(300):
        pairs = [("".join(chr(rnd.randrange(0, 0x2FF)) for _ in range(rnd.randrange(0, 40))),
                  "".join(chr(rnd.randrange(0, 0x2FF)) for _ in range(rnd.randrange(0, 600))))
                 for _ in range(rnd.randrange(0, 80))]  # fmt: skip
        kept = capped_headers(pairs)
        assert len(kept) <= MAX_HEADERS
        assert sum(len(k) + len(v) for k, v in kept.items()) <= MAX_HEADERS_TOTAL
        assert all(v.isprintable() and len(v) <= MAX_HEADER_VALUE for v in kept.values())


async def test_a_sqlite_store_from_before_response_headers_opens_and_reads_its_attempts(tmp_path):
    import sqlite3

    from notifyagent.scheduler.store import sqlite as sqlite_store

    path = tmp_path / "old.db"
    old_schema = sqlite_store.SCHEMA.replace(",\n    headers TEXT NOT NULL DEFAULT ''", "")
    assert "headers" not in old_schema
    with sqlite3.connect(path) as conn:
        conn.executescript(old_schema)
        conn.execute("INSERT INTO attempts VALUES ('n1', 1, 10, 20, 'd', 200, '', 1, x'6f6b')")
    store = sqlite_store.SqliteStore(path)
    await store.open()
    try:
        with sqlite3.connect(path) as conn:
            (row,) = conn.execute("SELECT number, snippet, headers FROM attempts").fetchall()
        assert row == (1, b"ok", "")
    finally:
        await store.close()


async def test_wheel_size_counts_only_notifies_waiting_for_their_time(system, target):
    from notifyagent.v1 import notify_service_pb2 as api

    target.respond("/slow", (200, 1.0))
    later = []
    for _ in range(3):
        n = pb.Notify(request=pb.HttpRequest(url=target.url()))
        n.delay.FromSeconds(60)
        later.append((await system.api.CreateNotify(api.CreateNotifyRequest(notify=n))).notify)
    await system.api.CancelNotify(api.CancelNotifyRequest(id=later[0].id))
    await system.create(target.url("/slow"))  # leased: its lease deadline sits in the wheel too
    await target.wait_for(1)
    status = await system.admin.GetStatus(admin.GetStatusRequest())
    assert status.wheel_size == 2, "two delayed notifies; not the cancelled one, not the lease deadline"
