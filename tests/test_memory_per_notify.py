"""What a notify held in memory (due within the horizon) shares with others instead of copying:
one Request per plain call, one policy object per distinct policy, one empty mapping. Pinned for the
API's conversion and for notifies the loader reads from SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import asyncio
from dataclasses import replace

import pytest
from hypothesis import given, settings, strategies as st
from notifyagent.scheduler.api import convert
from notifyagent.scheduler.engine.compact import SharedSpecs, Waiting
from notifyagent.scheduler.engine.core import Engine, EngineSettings
from notifyagent.scheduler.engine.operations import Operations
from notifyagent.scheduler.engine.transitions import MOVES, Held
from notifyagent.scheduler.store.memory import MemoryStore
from notifyagent.scheduler.engine.model import EMPTY, Notification, Request, RetryPolicy, Spec, State, Success
from notifyagent.v1 import notify_pb2 as pb

from support import T0, FakeClock, create, granted_leases
from test_store_contract import START, backing, nid


def held(i: int, *, url: str = "https://example.com/hook", headers: dict | None = None) -> Notification:
    spec = Spec(
        request=Request("POST", url, headers=dict(headers or {}), json_body='{"a":1}'), deliver_at_ms=1_000,
        retry=RetryPolicy(max_attempts=3), success=Success(status_codes=(200,)),
    )  # fmt: skip
    return Notification(id=nid(i), spec=spec, state=State.SCHEDULED, create_ms=500, due_ms=1_000)


def test_created_notifies_with_the_same_call_share_one_request_and_policies():
    p = pb.Notify(request=pb.HttpRequest(method=pb.HTTP_METHOD_POST, url="https://example.com/a", json_body="{}"))
    p.retry.max_attempts = 3
    a = convert.new_notify(p, "", now_ms=0)
    b = convert.new_notify(pb.Notify.FromString(p.SerializeToString()), "", now_ms=0)
    assert a.spec.request is b.spec.request and a.spec.retry is b.spec.retry
    assert a.spec.labels is EMPTY and a.spec.request.headers is EMPTY
    p.request.headers["X-One"] = "1"
    c = convert.new_notify(p, "", now_ms=0)
    assert c.spec.request is not a.spec.request and c.spec.request.headers == {"X-One": "1"}


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_loaded_notifies_with_the_same_call_share_one_request_and_policies(kind: str, tmp_path: Path):
    async with backing(kind, tmp_path) as open_one:
        store = await open_one()
        await store.insert([held(1), held(2), held(3, headers={"X-A": "1"}), held(4, url="https://example.com/other")])
        loaded = {n.id: n for n in await store.load_due(after=START, until_ms=10_000, limit=10)}
        one, two, with_headers, other = (loaded[nid(i)].spec for i in (1, 2, 3, 4))
        assert one.request is two.request and one.retry is two.retry and one.success is two.success
        assert one.labels is EMPTY and one.request.headers is EMPTY and one.request.form is EMPTY
        assert with_headers.request is not one.request and with_headers.request.headers == {"X-A": "1"}
        assert other.request is not one.request and other.request.url == "https://example.com/other"
        assert one == held(1).spec  # sharing changes nothing a reader sees


def test_held_notifies_alike_share_one_spec_without_their_deliver_time():
    shared = SharedSpecs(max_kinds=2)
    request = Request("POST", "https://example.com/hook")
    a, b = Spec(request=request, deliver_at_ms=1_000), Spec(request=request, deliver_at_ms=2_000)
    assert shared.spec(a) is shared.spec(b), "one spec for notifies that differ only in their time"
    assert shared.spec(a).deliver_at_ms is None and shared.spec(a).request is request
    keyed = Spec(request=request, deliver_at_ms=1_000, ordering_key="k")
    assert shared.spec(keyed) is not shared.spec(a) and shared.spec(keyed).ordering_key == "k"
    shared.spec(Spec(request=request, queue="q"))
    assert len(shared) == 2, "a bounded number of kinds is kept"


async def test_notifies_waiting_within_the_horizon_are_delivered_as_created_and_answers_keep_their_time():
    clock = FakeClock(T0)
    store = MemoryStore()
    e = Engine(store=store, settings=EngineSettings(load_interval_s=3600), clock=clock)
    await e.start()
    try:
        ops = Operations(e, store)
        specs = [Spec(request=Request("POST", f"https://example.com/{i % 2}", json_body='{"a":1}'), deliver_at_ms=T0 + 1_000 + i)
                 for i in range(6)]  # fmt: skip
        made = await create(ops, specs, batch=True)
        assert [n.spec.deliver_at_ms for n in made] == [T0 + 1_000 + i for i in range(6)], "the answers are as created"
        s = e.connect(dispatcher_id="d", version="", capacity=10, credit=10)
        clock.advance(1_010)
        for _ in range(5):
            await asyncio.sleep(0)
        leases = granted_leases(s)
        assert [(lease.notify.id, lease.notify.spec.request.url) for lease in leases] == [
            (n.id, n.spec.request.url) for n in made], "each delivered once, in due order, with its own call"  # fmt: skip
        assert [n.id for n in await store.load_due(after=(0, ""), until_ms=T0 + 5_000, limit=10)] == [n.id for n in made]
        assert (await store.get(made[0].id)).spec.deliver_at_ms == T0 + 1_000, "the store keeps the spec as given"
    finally:
        await e.stop()


def test_a_waiting_notify_unpacks_to_the_notify_it_was():
    plain = held(1)
    retried = Notification(id=nid(2), spec=plain.spec, state=State.RETRY_WAIT, create_ms=500, request_id="r-2", due_ms=9_000,
                           attempt_count=3, budget_base=1, first_attempt_ms=700, version=4)  # fmt: skip
    for n in (plain, retried):
        w = Waiting(n, n.spec)
        assert (w.id, w.state, w.due_ms, w.attempt_count, w.request_id, w.unreadable) == (
            n.id, n.state, n.due_ms, n.attempt_count, n.request_id, n.unreadable)  # fmt: skip
        assert w.full() == replace(n, version=0, timer_version=1), "versions count per copy"


@settings(max_examples=200, deadline=None)
@given(state=st.sampled_from([State.SCHEDULED, State.PENDING, State.RETRY_WAIT]), due=st.integers(1, 2**62),
       create=st.integers(0, 2**62), count=st.integers(0, 50), request_id=st.sampled_from(["", "r-1"]),
       moves=st.lists(st.integers(0, 7), max_size=4))  # fmt: skip
def test_a_waiting_notify_takes_the_moves_a_held_notify_takes_and_unpacks_to_what_they_made(state, due, create, count, request_id,
                                                                                           moves):  # fmt: skip
    """A Waiting keeps most held notifies (scheduled, never attempted, version 1) in a shorter form
    than the rest: whatever moves Held makes on it (one MOVES lists, or letting it go), it reads and unpacks like the
    Notification the same moves make."""
    plain = held(1)
    n = Notification(id=nid(1), spec=plain.spec, state=state, create_ms=create, request_id=request_id, due_ms=due,
                     attempt_count=count)  # fmt: skip
    w, twin = Waiting(n, n.spec), replace(n, version=0, timer_version=1)
    book, twin_book = Held(), Held()
    book.take(w)
    twin_book.take(twin)
    for pick in moves:
        allowed = sorted(MOVES[w.state])
        if pick == 7 or not allowed:
            book.release(w)
            twin_book.release(twin)
        else:
            book.move(w, allowed[pick % len(allowed)], due + 1)
            twin_book.move(twin, allowed[pick % len(allowed)], due + 1)
        assert (w.state, w.version, w.due_ms, w.create_ms, w.attempt_count, w.request_id) == (
            twin.state, twin.version, twin.due_ms, twin.create_ms, twin.attempt_count, twin.request_id)  # fmt: skip
    assert w.full() == twin
    assert book.counts({}) == twin_book.counts({})


def test_the_sharing_caches_keep_small_calls_only_so_big_bodies_sent_once_are_not_pinned():
    """plain_request and SharedSpecs keep up to 4,096 entries each: kept big bodies (hostile input
    sends a new 1 MiB body per call) would pin gigabytes after their notifies ended."""
    from notifyagent.scheduler.engine import model
    from notifyagent.scheduler.engine.model import SHARED_REQUEST_BYTES, plain_request

    small = plain_request("POST", "http://127.0.0.1/x", b"", '{"a":1}')
    assert plain_request("POST", "http://127.0.0.1/x", b"", '{"a":1}') is small, "small calls are shared"
    big_body = b"x" * (SHARED_REQUEST_BYTES + 1)
    kept = model._shared_plain_request.cache_info().currsize
    big = plain_request("POST", "http://127.0.0.1/x", big_body, "")
    assert plain_request("POST", "http://127.0.0.1/x", big_body, "") is not big, "big calls are not kept"
    specs = SharedSpecs()
    spec = Spec(request=big, deliver_at_ms=None, trigger_key="", ordering_key="", queue="default", retry=RetryPolicy(),
                success=Success(), fire_and_forget=False, timeout=10.0, expire_at_ms=None, callback_url="", labels=EMPTY)  # fmt: skip
    held = specs.spec(spec)
    assert held.request is big and len(specs) == 0, "a spec with a big body is not kept for sharing"
    assert model._shared_plain_request.cache_info().currsize == kept, "the request cache holds no big call"
    assert specs.spec(replace(spec, request=small)) is specs.spec(replace(spec, request=small)), "small ones are shared"
