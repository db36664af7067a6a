"""Property-based fuzz: hostile input over every RPC, and raw malformed bytes on the wire.

At least 20,000 calls in the default run (NOTIFY_FUZZ_CASES changes it) against an
in-process scheduler over real gRPC: CreateNotify, BatchCreateNotify, UpdateNotify,
Trigger, Get/List/Cancel/Retry, every AdminService RPC, corrupt or random bytes
to every unary method, and random frames in a dispatcher's Lease stream. No answer may be UNKNOWN or INTERNAL, no invalid row may be
stored, ListNotifies and GetNotify must still work afterwards and memory stays
bounded. The counts by status code are printed in every run."""

from __future__ import annotations

import asyncio
import collections
import ctypes
import json
import math
import os
import threading
import time

import grpc
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from notifyagent.scheduler.engine import validate
from notifyagent.scheduler.engine.model import ListFilter
from notifyagent.v1 import admin_service_pb2 as admin, dispatch_service_pb2 as dpb, notify_pb2 as pb, notify_service_pb2 as api
from support import System, settings_for

CASES = int(os.environ.get("NOTIFY_FUZZ_CASES", "20000"))
PER_EXAMPLE = 10
ROUNDS = 8
RSS_GROWTH_MB = 150  # what the later half of the rounds may grow over the earlier half's peak
BIG = ["x" * 300_000, "é" * 70_000, "\x00" * 50_000, "a\nb" * 30_000]
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
NOTIFY_METHODS = ["CreateNotify", "BatchCreateNotify", "Trigger", "GetNotify", "ListNotifies", "CancelNotify",
                  "RetryNotify", "UpdateNotify"]  # fmt: skip
ADMIN_METHODS = ["GetStatus", "PauseQueue", "ResumeQueue", "SetQueueLimits"]
HELLO = dpb.LeaseRequest(hello=dpb.DispatcherHello(dispatcher_id="fuzz", version="f", capacity=1)).SerializeToString()


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory in MB. For this process, after handing freed memory back to the OS:
    the test itself allocates and frees hundreds of MB of hostile values, and glibc keeps
    freed memory mapped; what is measured is what stays live."""
    if pid == "self":
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --- strategies ------------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
SOME = ["", "default", "q1", "k:1", "a b", "a\x00b", "tab\t", "é", "x" * 201, "id-" + "Z" * 70]


def pick(values: list):
    """One of values, with a short repr (Hypothesis prints strategies; big values would make that slow)."""
    def one(i: int):
        return values[i]

    return st.integers(0, len(values) - 1).map(one)


small = st.one_of(text, pick(SOME), pick(BIG))
urls = st.one_of(
    st.sampled_from([
        "http://127.0.0.1:9/x", "https://example.com/hook?a=1", "", "ftp://x", "http://[::1/x", "http:///p",
        "http://exa mple.com/", "http://h:0/", "http://h:99999/", "javascript:alert(1)", "http://a\x00b/",
        "https://例え.jp/パス",
    ]),
    pick(["http://" + "h" * 9000 + "/"]),
    text.map(lambda t: "http://" + t),
    small,
)  # fmt: skip
json_bodies = st.one_of(
    st.just(""),
    st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | text,
                 lambda c: st.lists(c, max_size=3) | st.dictionaries(text, c, max_size=3), max_leaves=8).map(
        lambda v: __import__("json").dumps(v)),
    st.tuples(st.just("["), st.integers(1, 200_000)),  # expanded by build_notify: a strategy must not
    st.tuples(st.just("{"), st.integers(1, 5000)),  # produce big unique values (they were seen to stay in memory)
    text,
)  # fmt: skip


# Strategies draw plain data; protobuf messages are built only when a call is made (upb
# arenas of messages built during generation were seen to stay alive far longer).
durations = st.tuples(st.one_of(INT64, st.integers(-5, 400 * 86400)), INT32)
timestamps = st.builds(lambda s, n, absolute: (s if absolute else int(time.time()) + s, n),
                       st.one_of(st.integers(-3 * 86400, 500 * 86400), st.integers(-(2**62), 2**62)),
                       st.one_of(st.just(0), INT32), st.booleans())  # fmt: skip
maps = st.dictionaries(small, small, max_size=4) | pick([
    {f"k{i}": "v" for i in range(2000)}, {"X-Big": "v" * 200_000}, {f"X-{i}": "v" for i in range(150)},
])  # fmt: skip
codes = st.lists(st.one_of(st.integers(100, 599), INT32), max_size=4) | st.just(list(range(100, 300)))


def seconds(field, value) -> None:
    field.seconds, field.nanos = value


bodies = st.one_of(st.binary(max_size=64), pick([b"", b"x" * (1 << 20), b"x" * ((1 << 20) + 1)]))


@st.composite
def notifies(draw) -> dict:
    """A notify as plain data: build_notify makes the message."""
    return dict(
        request=dict(
            method=draw(st.one_of(st.integers(0, 7), INT32)), url=draw(urls), headers=draw(maps),
            body=draw(bodies),
            json_body=draw(json_bodies), form_body=draw(st.dictionaries(text, text, max_size=3)),
        ),
        ordering_key=draw(small), queue=draw(small), labels=draw(maps), callback_url=draw(st.just("") | urls),
        fire_and_forget=draw(st.booleans()),
        schedule=draw(st.one_of(st.just(None), st.tuples(st.just("deliver_at"), timestamps),
                                st.tuples(st.just("delay"), durations), st.tuples(st.just("trigger_key"), small))),
        retry=draw(st.none() | st.tuples(INT32, durations, durations, st.floats(), durations, codes)),
        success=draw(st.none() | st.tuples(codes, small)),
        timeout=draw(st.none() | durations),
        expire_at=draw(st.none() | timestamps),
    )  # fmt: skip


def build_notify(d: dict) -> pb.Notify:
    request = dict(d["request"])
    if isinstance(request["json_body"], tuple):
        kind, depth = request["json_body"]
        request["json_body"] = "[" * depth + "]" * depth if kind == "[" else '{"a":' * depth + "1" + "}" * depth
    n = pb.Notify(request=pb.HttpRequest(**request), ordering_key=d["ordering_key"], queue=d["queue"],
                  labels=d["labels"], callback_url=d["callback_url"], fire_and_forget=d["fire_and_forget"])  # fmt: skip
    if d["schedule"] is not None:
        which, value = d["schedule"]
        if which == "trigger_key":
            n.trigger_key = value
        else:
            seconds(getattr(n, which), value)
    if d["retry"] is not None:
        attempts, lo, hi, multiplier, most, retry_codes = d["retry"]
        n.retry.max_attempts, n.retry.multiplier = attempts, multiplier
        n.retry.retry_codes.extend(retry_codes)
        for field, value in ((n.retry.min_backoff, lo), (n.retry.max_backoff, hi), (n.retry.max_retry_duration, most)):
            seconds(field, value)
    if d["success"] is not None:
        n.success.status_codes.extend(d["success"][0])
        n.success.body_contains = d["success"][1]
    if d["timeout"] is not None:
        seconds(n.timeout, d["timeout"])
    if d["expire_at"] is not None:
        seconds(n.expire_at, d["expire_at"])
    return n


ids = st.one_of(st.integers(0, 1000).map(lambda i: ("known", i)), small)
creates = st.tuples(notifies(), st.one_of(st.just(""), small))


def build_create(c) -> api.CreateNotifyRequest:
    return api.CreateNotifyRequest(notify=build_notify(c[0]), request_id=c[1])


def corrupt(create, at: int, byte: int, cut: bool) -> bytes:
    wire = build_create(create).SerializeToString()
    if not wire:
        return bytes([byte])
    i = at % len(wire)
    return wire[:i] if cut else wire[:i] + bytes([byte]) + wire[i + 1 :]


calls = st.one_of(
    st.tuples(st.just("CreateNotify"), creates),
    st.tuples(st.just("BatchCreateNotify"), st.lists(creates, max_size=4)),
    st.tuples(st.just("Trigger"), st.tuples(small, st.none() | durations)),
    st.tuples(st.just("UpdateNotify"), st.tuples(ids, notifies(), st.lists(st.sampled_from(
        ["request", "schedule", "deliver_at", "delay", "trigger_key", "retry", "success", "timeout", "expire_at",
         "labels", "callback_url", "fire_and_forget", "queue", "", "x\x00"]), max_size=4))),
    st.tuples(st.sampled_from(["GetNotify", "CancelNotify", "RetryNotify"]), ids),
    st.tuples(st.just("ListNotifies"), st.fixed_dictionaries(dict(state=INT32, queue=small, trigger_key=small,
                                                 ordering_key=small, page_size=INT32, page_token=small))),
    st.tuples(st.just("GetStatus"), st.just({})),
    st.tuples(st.sampled_from(["PauseQueue", "ResumeQueue"]), small),
    st.tuples(st.just("SetQueueLimits"), st.fixed_dictionaries(dict(name=small, max_concurrent=INT32,
                                                   rate=st.floats(), burst=INT32))),
    st.tuples(st.just("raw"), st.tuples(st.sampled_from(NOTIFY_METHODS + ADMIN_METHODS), st.one_of(
        st.binary(max_size=64),
        st.tuples(creates, st.integers(0, 10**6), st.integers(0, 255), st.booleans()),
    ))),
    # Random bytes as the first frame, or after a good hello (credit 0). The random frame comes last: an
    # asyncio client that still writes after the server ended the call reports INTERNAL "Internal error
    # from Core" instead of the server's status (grpc/grpc#36066), which would blame the server.
    st.tuples(st.just("lease"), st.one_of(st.tuples(st.binary(max_size=64)), st.tuples(st.just(HELLO), st.binary(max_size=64)))),
)  # fmt: skip


# --- the run -------------------------------------------------------------------------


class Harness:
    """The system on its own event loop in a thread; Hypothesis drives it from the test's thread."""

    def __init__(self, tmp_path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        # A small memory bound: what stays in memory is bounded, so growth beyond it is a leak.
        self.system = System(settings_for(tmp_path, max_in_memory=2000), dispatchers=0)
        self.codes: collections.Counter[str] = collections.Counter()
        self.bad: list[str] = []
        self.known: list[str] = []
        self.run(self.system.start())

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.run(self.system.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def call(self, kind: str, arg) -> None:
        s = self.system
        try:
            if kind == "lease":  # random bytes in a dispatcher's Lease stream
                async for _ in s.channel.stream_stream("/notifyagent.v1.DispatchService/Lease")(iter(arg), timeout=20):
                    pass
            elif kind == "raw":
                method, wire = arg
                wire = wire if isinstance(wire, bytes) else corrupt(*wire)
                service = "AdminService" if method in ADMIN_METHODS else "NotifyService"
                await s.channel.unary_unary(f"/notifyagent.v1.{service}/{method}")(wire, timeout=20)
            elif kind in ("GetNotify", "CancelNotify", "RetryNotify", "UpdateNotify"):
                ref = arg[0] if kind == "UpdateNotify" else arg
                notify_id = self.known[ref[1] % len(self.known)] if isinstance(ref, tuple) and self.known else str(ref)
                if kind == "UpdateNotify":
                    n = build_notify(arg[1])
                    n.id = notify_id
                    req = api.UpdateNotifyRequest(notify=n)
                    req.update_mask.paths.extend(arg[2])
                    await s.api.UpdateNotify(req, timeout=20)
                else:
                    request = {"GetNotify": api.GetNotifyRequest, "CancelNotify": api.CancelNotifyRequest,
                               "RetryNotify": api.RetryNotifyRequest}[kind](id=notify_id)  # fmt: skip
                    await getattr(s.api, kind)(request, timeout=20)
            elif kind in ("PauseQueue", "ResumeQueue"):
                request = (admin.PauseQueueRequest if kind == "PauseQueue" else admin.ResumeQueueRequest)(name=arg)
                await getattr(s.admin, kind)(request, timeout=20)
            elif kind in ADMIN_METHODS:
                request = {"GetStatus": admin.GetStatusRequest, "SetQueueLimits": admin.SetQueueLimitsRequest}[kind](**arg)
                await getattr(s.admin, kind)(request, timeout=20)
            else:
                if kind == "CreateNotify":
                    request = build_create(arg)
                elif kind == "BatchCreateNotify":
                    request = api.BatchCreateNotifyRequest(requests=[build_create(c) for c in arg])
                elif kind == "Trigger":
                    request = api.TriggerRequest(trigger_key=arg[0])
                    if arg[1] is not None:
                        seconds(request.delay, arg[1])
                else:
                    request = api.ListNotifiesRequest(**arg)
                resp = await getattr(s.api, kind)(request, timeout=20)
                if kind == "CreateNotify":
                    self.known.append(resp.notify.id)
                elif kind == "BatchCreateNotify":
                    self.known += [n.id for n in resp.notifies]
            self.codes["OK"] += 1
        except grpc.RpcError as e:
            self.codes[e.code().name] += 1
            if e.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL):
                self.bad.append(f"{kind}: {e.code().name} {e.details()[:300]}")

    async def batch(self, items) -> None:
        await asyncio.gather(*(self.call(kind, arg) for kind, arg in items))



async def _check_store_and_reads(h: Harness) -> tuple[int, list[str]]:
    """Every stored row decodes and satisfies the bounds; List pages through; Get reads a sample."""
    s, store = h.system, h.system.scheduler.store
    end_ms = int(time.time() * 1000)
    limits, problems, seen, after = s.scheduler.engine.settings.limits, [], 0, ""
    while True:
        page = await store.list(ListFilter(), after_id=after, limit=1000)
        for n in page:
            seen += 1
            bad = [v for v in validate.check_spec(n.spec, now_ms=n.create_ms, limits=limits)
                   if v[0] not in ("notify.schedule", "notify.expire_at")]  # fmt: skip
            at, x = n.spec.deliver_at_ms, n.spec.expire_at_ms
            if at is not None and not n.create_ms - 2 * 86400_000 <= at <= end_ms + limits.max_schedule_ahead_s * 1000:
                bad.append(("schedule", str(at)))
            if x is not None and not n.create_ms < x <= end_ms + limits.max_expire_ahead_s * 1000:
                bad.append(("expire_at", str(x)))
            if n.unreadable or bad:
                problems.append(f"{n.id}: {n.unreadable or bad}")
        if len(page) < 1000:
            break
        after = page[-1].id
    listed, token = 0, ""
    while True:
        resp = await s.api.ListNotifies(api.ListNotifiesRequest(page_size=1000, page_token=token))
        listed += len(resp.notifies)
        token = resp.next_page_token
        if not token:
            break
    if listed != seen:
        problems.append(f"ListNotifies shows {listed} notifies, the store holds {seen}")
    for notify_id in h.known[:: max(1, len(h.known) // 300)]:
        await s.get(notify_id)
    await s.admin.GetStatus(admin.GetStatusRequest())
    return seen, problems


@pytest.mark.timeout(900)
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
def test_no_input_gets_unknown_or_internal_stores_anything_invalid_or_breaks_a_read(tmp_path, capsys):
    # glibc raises its mmap threshold each time a big block is freed, after which blocks of
    # hundreds of KB come from the heap and fragment it: RSS then follows which big cases came
    # when, not what stays live. A fixed threshold keeps big blocks in mmaps returned on free.
    ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD (fixing it also ends the dynamic raise)
    h = Harness(tmp_path)
    rss_before = rss_mb()
    rounds_rss: list[float] = []  # after each round
    started = time.monotonic()
    try:

        # Several rounds, each a fresh Hypothesis run: one run's record of every choice it made
        # grows with its examples, and would swamp the memory figures of the system under test.
        for _ in range(ROUNDS):

            @settings(max_examples=math.ceil(CASES / PER_EXAMPLE / ROUNDS), deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))  # fmt: skip
            @given(st.lists(calls, min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
            def fuzz(items):
                h.run(h.batch(items))

            fuzz()
            rounds_rss.append(rss_mb())
        stored, problems = h.run(_check_store_and_reads(h), timeout=300)
        assert h.run(h.system.serving())
    finally:
        rss_after = rss_mb()
        with capsys.disabled():
            total = sum(h.codes.values())
            print(f"\nFUZZ cases={total} in {time.monotonic() - started:.0f} s; by status: "
                  + ", ".join(f"{code}={n}" for code, n in h.codes.most_common())
                  + f"; stored={len(h.known)} rss_mb start={rss_before:.0f} rounds={[round(r) for r in rounds_rss]} end={rss_after:.0f}")  # fmt: skip
        h.stop()
    assert total >= CASES
    assert not h.bad, "\n".join(h.bad[:20])
    assert not problems, "\n".join(problems[:20])
    # RSS keeps the peak a big case reached, whichever round it fell in; a leak shows as rounds
    # that keep climbing, so the later half may not outgrow the earlier half's peak.
    half = len(rounds_rss) // 2
    assert max(rounds_rss[half:]) - max(rounds_rss[:half]) < RSS_GROWTH_MB, f"memory keeps growing with hostile input: {rounds_rss}"


_JSON_TEXT = st.text(alphabet='{}[]",:0123456789.eE+- \t\n\rtrunfalsNIiy\\u\ufeff', max_size=30)
_JSON_VALUES = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
                            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                            max_leaves=10).map(json.dumps)  # fmt: skip
_EDITS = st.sampled_from(["", " ", "\n", "x", "}", "]", ",", "0", "\ufeff", '"'])


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(
    _JSON_TEXT,
    st.tuples(_EDITS, _JSON_VALUES, _EDITS).map("".join),  # a value with something before or after it
    st.tuples(_JSON_VALUES, st.integers(0, 40)).map(lambda t: t[0][: t[1]]),  # cut short
))  # fmt: skip
def test_json_body_check_takes_exactly_what_json_loads_takes(body):
    """The JSON check's fast path (the scanner alone, when one value fills the text) never takes what
    json.loads refuses nor refuses what it takes (nesting within the limit)."""
    try:
        json.loads(body)
        loads_ok = True
    except ValueError:
        loads_ok = False
    assert (validate.json_problem(body, 32) == "") == loads_ok, body
