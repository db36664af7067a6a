"""The create path on the message gives what the path through domain objects gives: the same
violations (check_incoming against the domain rules UpdateNotify checks, check_spec and
check_schedule_input), the same answer (fill_created against fill_notify, which GetNotify
answers with) and the same stored spec, for valid and hostile notifies alike."""

from __future__ import annotations

import base64
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from notifyagent.common.sealing import SecretBox, secret_names
from notifyagent.scheduler.api import convert
from notifyagent.scheduler.engine import validate
from notifyagent.scheduler.engine.limits import Limits, notify_size
from notifyagent.scheduler.engine.model import Notification, State
from notifyagent.scheduler.engine.operations import Created
from notifyagent.scheduler.store import codec
from notifyagent.v1 import notify_pb2 as pb
from notifyagent.v1.notify_service_pb2 import BatchCreateNotifyResponse

NOW = int(time.time() * 1000)
NAMES = secret_names("X-Signature")
LIMITS = Limits()


def first_state(new) -> tuple[State, int | None]:
    if new.spec.trigger_key:
        return State.WAITING_TRIGGER, None
    if new.spec.deliver_at_ms is not None and new.spec.deliver_at_ms > NOW:
        return State.SCHEDULED, new.spec.deliver_at_ms
    return State.PENDING, NOW


def domain_violations(new, prefix: str = "notify") -> list[tuple[str, str]]:
    """The oracle: a NewNotify judged by the domain rules (a request_id, then what only the wire
    form tells, then the spec), in the order check_incoming reports them."""
    return (validate._check_request_id(new.request_id, prefix) + validate.check_schedule_input(new, limits=LIMITS, prefix=prefix)
            + validate.check_spec(new.spec, now_ms=NOW, limits=LIMITS, prefix=prefix))  # fmt: skip


def both_ways(message: pb.Notify, request_id: str = "", by: str = "svc"):
    """(the old path's violations, answer, spec), (the message path's), for one notify."""
    old_new = convert.new_notify(message, request_id, now_ms=NOW, created_by=by)  # reads the message, changes nothing
    inc = convert.incoming(message, request_id, now_ms=NOW, created_by=by)  # the same map: the same order of violations
    old_bad = domain_violations(old_new)
    new_bad = validate.check_incoming(inc, now_ms=NOW, limits=LIMITS)
    if old_bad or new_bad:
        return (old_bad, None, None), (new_bad, None, None)
    assert validate.incoming_size(inc) == notify_size(old_new.spec)
    state, due = first_state(old_new)
    old_answer = convert.notify_to_proto(Notification(id="01JTEST", spec=old_new.spec, state=state, create_ms=NOW,
                                                      request_id=request_id, due_ms=due), secret=NAMES)  # fmt: skip
    c = Created("01JTEST", state, due, NOW, inc.group_key)
    row = codec.new_row(inc, c.id, c.state, c.due_ms, NOW)
    new_answer = pb.Notify()
    convert.fill_created(new_answer, inc, c, NAMES)
    # A batch's answer: each notify serialized, parsed once; the same message either way
    first = Notification(id="01JFIRST", spec=old_new.spec, state=state, create_ms=NOW, request_id=request_id, due_ms=due)
    batch = BatchCreateNotifyResponse.FromString(convert.answer_bytes([convert.created_bytes(inc, c, NAMES),
                                                                       convert.created_bytes(inc, first, NAMES)]))  # fmt: skip
    assert list(batch.notifies) == [new_answer, convert.notify_to_proto(first, secret=NAMES)]
    box = SecretBox(base64.urlsafe_b64encode(os.urandom(32)).decode(), NAMES)
    stored = codec.spec_from_column(codec.encode_message(row[12], box), trigger_key=row[5], ordering_key=row[4],
                                    queue=row[3], group_key=row[13], box=box)  # fmt: skip
    assert row[14] == codec.labels_json(old_new.spec)
    return (old_bad, old_answer, old_new.spec), (new_bad, new_answer, stored)


def notify(**kw) -> pb.Notify:
    request = kw.pop("request", None) or pb.HttpRequest(method=pb.HTTP_METHOD_POST, url="https://example.com/hook")
    return pb.Notify(request=request, **kw)


CASES = [
    notify(),
    notify(request=pb.HttpRequest(url="https://example.com/x", json_body='{"a": [1, {"b": 2}]}')),
    notify(request=pb.HttpRequest(method=pb.HTTP_METHOD_PUT, url="https://example.com/x", body=b"\x00\xff",
                                  headers={"Authorization": "Bearer s", "X-Signature": "sig", "X-Trace": "t"})),
    notify(request=pb.HttpRequest(method=pb.HTTP_METHOD_GET, url="https://example.com/f", form_body={"k": "v", "é": "ü"})),
    notify(trigger_key="deploy-7", ordering_key="k1", queue="q1", labels={"team": "a"}, callback_url="https://e.com/cb"),
    notify(retry=pb.RetryPolicy(max_attempts=3, retry_codes=[500, 503]), success=pb.SuccessCriteria(status_codes=[200]),
           fire_and_forget=True),
    notify(retry=pb.RetryPolicy(min_backoff={"seconds": 9000})),  # raises the default cap with it
    notify(timeout={"seconds": 10, "nanos": 500_000_000}, expire_at={"seconds": NOW // 1000 + 3600}),
    notify(group_key="g1", deliver_at={"seconds": NOW // 1000 + 60}),
    # output-only and hostile values: ignored, or refused the same way
    notify(id="x", state=pb.STATE_FAILED, attempt_count=9, attempts=[pb.Attempt(number=1)], create_time={"seconds": 5},
           created_by="someone-else", complete_time={"seconds": 7}, next_attempt_time={"seconds": 8}),
    notify(request=pb.HttpRequest(method=9, url="ftp://x")),
    notify(request=pb.HttpRequest(url="https://example.com/x", json_body="[" * 70 + "]" * 70)),
    notify(request=pb.HttpRequest(url="https://example.com/x", json_body="{bad")),
    notify(request=pb.HttpRequest(url="https://example.com/x", headers={"Host": "h", "a b": "c", "X": "v\n"})),
    notify(delay={"seconds": -5}),
    notify(trigger_key=""),
    notify(retry=pb.RetryPolicy(max_attempts=5000, multiplier=0.5, retry_codes=[42])),
    notify(labels={"": "x", "k": "v" * 300}, queue="a b", ordering_key="\n"),
    notify(expire_at={"seconds": 1}),
    notify(deliver_at={"seconds": 2**40}),
]


@pytest.mark.parametrize("i", range(len(CASES)))
def test_the_message_path_gives_the_same_violations_answer_and_stored_spec(i):
    (old_bad, old_answer, old_spec), (new_bad, new_answer, stored) = both_ways(CASES[i], request_id="r" if i % 2 else "")
    assert new_bad == old_bad
    if not old_bad:
        assert new_answer == old_answer
        assert stored == old_spec


texts = st.text(max_size=12)
maps = st.dictionaries(texts, texts, max_size=3)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.integers(0, 8), url=st.sampled_from(["https://e.com/h", "http://h:0/", "", "x"]), headers=maps,
       json_body=st.sampled_from(["", "{}", "[1", '{"a": 1}']), form=maps, labels=maps, queue=texts, key=texts,
       schedule=st.sampled_from(["", "delay", "deliver_at", "trigger_key"]), when=st.integers(-10**6, 10**11),
       attempts=st.integers(-1, 2000), codes=st.lists(st.integers(-1, 700), max_size=3), by=texts)  # fmt: skip
def test_the_message_path_agrees_on_generated_notifies(method, url, headers, json_body, form, labels, queue, key, schedule,
                                                       when, attempts, codes, by):  # fmt: skip
    m = pb.Notify(request=pb.HttpRequest(method=method, url=url, headers=headers, json_body=json_body, form_body=form),
                  labels=labels, queue=queue, ordering_key=key, retry=pb.RetryPolicy(max_attempts=attempts, retry_codes=codes))
    if schedule == "delay":
        m.delay.seconds = when // 1000
    elif schedule == "deliver_at":
        m.deliver_at.seconds = (NOW + when) // 1000
    elif schedule == "trigger_key":
        m.trigger_key = key
    (old_bad, old_answer, old_spec), (new_bad, new_answer, stored) = both_ways(m, by=by)
    assert new_bad == old_bad
    assert new_answer == old_answer and stored == old_spec
