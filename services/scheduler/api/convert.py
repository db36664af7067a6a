"""protobuf <-> domain for the scheduler's servicers. The only place both meet."""

from __future__ import annotations

import functools

from google.protobuf import duration_pb2, timestamp_pb2

from ...common.calls import DEFAULT_METHOD, DEFAULT_TIMEOUT_S, METHOD_BY_NUMBER, NUMBER_BY_METHOD
from ...common.sealing import ALWAYS_SECRET, REDACTED, redact
from ...v1 import notify_pb2 as pb
from ..engine.operations import Created
from ..engine.validate import Incoming
from ..store import codec
from ..engine.model import EMPTY, AttemptRecord, GroupStatus, NewNotify, Notification, Request, Spec, State, plain_request

DEFAULT_RETRY, DEFAULT_SUCCESS = codec.DEFAULT_RETRY, codec.DEFAULT_SUCCESS
UNREADABLE_LABEL = "notifyagent.unreadable"  # shown on a notify whose stored row could not be decoded


def seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


_MAX_DURATION_S = 315_576_000_000  # what a Duration can hold (10,000 years)


def duration(s: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(round(min(max(s, -_MAX_DURATION_S), _MAX_DURATION_S) * 1e9)))
    return out


def millis(t: timestamp_pb2.Timestamp) -> int:
    return t.seconds * 1000 + t.nanos // 1_000_000


_MIN_MS, _MAX_MS = -62135596800000, 253402300799999  # 0001-01-01 and 9999-12-31T23:59:59.999Z


def timestamp(ms: int) -> timestamp_pb2.Timestamp:
    """A Timestamp, clamped to the range a Timestamp can hold (validation keeps stored times well inside)."""
    out = timestamp_pb2.Timestamp()
    out.FromMilliseconds(min(max(ms, _MIN_MS), _MAX_MS))
    return out


def _schedule(p: pb.Notify, now_ms: int) -> tuple[str, float | None, int | None]:
    """Which schedule a caller's Notify sets, its delay (seconds) and the due time it asks for (ms)."""
    which = p.WhichOneof("schedule") or ""
    if which == "deliver_at":
        return which, None, millis(p.deliver_at)
    if which == "delay":
        delay = seconds(p.delay)
        return which, delay, now_ms + int(max(0.0, delay) * 1000)
    return which, None, None


def incoming(p: pb.Notify, request_id: str, *, now_ms: int, created_by: str = "") -> Incoming:
    """What the create path reads off a caller's Notify, once; the message itself goes with it
    (engine/validate.py checks it, the store keeps it). created_by: the caller's token name."""
    r = p.request
    method = METHOD_BY_NUMBER.get(r.method, DEFAULT_METHOD if r.method == pb.HTTP_METHOD_UNSPECIFIED else f"#{r.method}")
    which, delay, deliver_at = _schedule(p, now_ms)
    return Incoming(
        p, request_id, which, delay, deliver_at, p.trigger_key, p.ordering_key, p.queue or "default", p.group_key, method,
        codec.cached(codec.retry_policy, p.retry.SerializeToString()) if p.HasField("retry") else DEFAULT_RETRY,
        codec.cached(codec.success_criteria, p.success.SerializeToString()) if p.HasField("success") else DEFAULT_SUCCESS,
        seconds(p.timeout) if p.HasField("timeout") else DEFAULT_TIMEOUT_S,
        millis(p.expire_at) if p.HasField("expire_at") else None,
        created_by,
    )  # fmt: skip


def fill_created(out: pb.Notify, new: Incoming, c: Created, secret: frozenset[str] = ALWAYS_SECRET) -> None:
    """A created notify's answer into an empty message in place: the caller's message (the store
    normalized it: codec.normalize) copied in C, with what fill_notify would add: id, state,
    queue, group, times, the policies in full, secret header values <redacted>."""
    m = new.message
    if _plain(m, secret):  # the common case, in C: the message and what the answer adds, parsed into out at once
        out.MergeFromString(m.SerializeToString() + _default_policies(new.timeout) + _created_fields(new, c))
        return
    out.CopyFrom(m)
    if m.HasField("retry"):  # merging would add its repeated codes twice
        out.ClearField("retry")
    if m.HasField("success"):
        out.ClearField("success")
    out.MergeFromString(codec.policy_bytes(new.retry, new.success, new.timeout))
    headers = out.request.headers
    if len(headers):
        for k in [k for k in headers if k.lower() in secret]:
            headers[k] = REDACTED
    out.id = c.id
    out.state = int(c.state)
    out.queue = new.queue
    if c.group_key:
        out.group_key = c.group_key
    _set_ms(out.create_time, c.create_ms)
    if c.due_ms is not None and c.state != State.WAITING_TRIGGER:
        _set_ms(out.next_attempt_time, c.due_ms)


def _plain(m: pb.Notify, secret: frozenset[str]) -> bool:
    """Whether a created notify's answer is its message plus fields (no policy given, no secret header)."""
    headers = m.request.headers
    return not (m.HasField("retry") or m.HasField("success") or len(headers) and any(k.lower() in secret for k in headers))


def created_bytes(new: Incoming, got, secret: frozenset[str] = ALWAYS_SECRET) -> bytes:
    """The serialized answer of one notify of a create (got: Created, or the first notify
    with its request_id): what fill_created or fill_notify builds, for a batch's answer
    parsed once (answer_bytes)."""
    if isinstance(got, Created):
        m = new.message
        if _plain(m, secret):
            return m.SerializeToString() + _default_policies(new.timeout) + _created_fields(new, got)
        out = pb.Notify()
        fill_created(out, new, got, secret)
    else:
        out = pb.Notify()
        fill_notify(out, got, secret=secret)
    return out.SerializeToString()


def answer_bytes(notifies) -> bytes:
    """Serialized notifies (created_bytes) as the bytes of a message whose field 1 repeats them
    (BatchCreateNotifyResponse.notifies)."""
    return b"".join([b"\x0a" + _size_prefixed(n) for n in notifies])


def _created_fields(new: Incoming, c: Created) -> bytes:
    """id, state, queue, group_key, create_time and next_attempt_time of an answer, serialized."""
    out = b"\x0a" + _size_prefixed(c.id.encode()) + bytes((0x40, int(c.state))) + _queue_field(new.queue)
    if c.group_key:
        out += b"\xaa\x01" + _size_prefixed(c.group_key.encode())  # field 21
    out += _time_field(17, c.create_ms)
    if c.due_ms is not None and c.state != State.WAITING_TRIGGER:
        out += _time_field(18, c.due_ms)
    return out


def _size_prefixed(payload: bytes) -> bytes:
    size, head = len(payload), bytearray()
    while size > 0x7F:
        head.append(size & 0x7F | 0x80)
        size >>= 7
    head.append(size)
    return bytes(head) + payload


@functools.lru_cache(maxsize=256)
def _queue_field(queue: str) -> bytes:
    return b"\x3a" + _size_prefixed(queue.encode())  # field 7


@functools.lru_cache(maxsize=64)
def _time_field(number: int, ms: int) -> bytes:
    """A Timestamp field of a Notify, serialized (a batch's notifies share their times)."""
    out = pb.Notify()
    _set_ms(getattr(out, out.DESCRIPTOR.fields_by_number[number].name), ms)
    return out.SerializeToString()


def _default_policies(timeout_s: float) -> bytes:
    """codec.policy_bytes of the default retry and success with this timeout, by the timeout alone."""
    cached = _DEFAULT_POLICIES.get(timeout_s)
    if cached is None:
        if len(_DEFAULT_POLICIES) >= 1024:
            _DEFAULT_POLICIES.clear()
        cached = _DEFAULT_POLICIES[timeout_s] = codec.policy_bytes(DEFAULT_RETRY, DEFAULT_SUCCESS, timeout_s)
    return cached


_DEFAULT_POLICIES: dict[float, bytes] = {}


def new_notify(p: pb.Notify, request_id: str, *, now_ms: int, created_by: str = "") -> NewNotify:
    """Builds a domain NewNotify as given; engine/validate.py judges it.
    created_by: the caller's token name (Notify.created_by is output only and ignored here)."""
    r = p.request
    method = METHOD_BY_NUMBER.get(r.method, DEFAULT_METHOD if r.method == pb.HTTP_METHOD_UNSPECIFIED else f"#{r.method}")
    which, delay, deliver_at = _schedule(p, now_ms)
    retry = codec.cached(codec.retry_policy, p.retry.SerializeToString()) if p.HasField("retry") else DEFAULT_RETRY
    success = codec.cached(codec.success_criteria, p.success.SerializeToString()) if p.HasField("success") else DEFAULT_SUCCESS
    # len() first: iterating an empty protobuf map through the Mapping ABC costs more than the rest
    if len(r.headers) or len(r.form_body):
        request = Request(method=method, url=r.url, body=r.body, json_body=r.json_body,
                          headers=dict(r.headers) if len(r.headers) else EMPTY,
                          form=dict(r.form_body) if len(r.form_body) else EMPTY)  # fmt: skip
    else:
        request = plain_request(method, r.url, r.body, r.json_body)
    spec = Spec(
        request=request,
        deliver_at_ms=deliver_at,
        trigger_key=p.trigger_key,
        ordering_key=p.ordering_key,
        queue=p.queue or "default",
        retry=retry,
        success=success,
        fire_and_forget=p.fire_and_forget,
        timeout=seconds(p.timeout) if p.HasField("timeout") else DEFAULT_TIMEOUT_S,
        expire_at_ms=millis(p.expire_at) if p.HasField("expire_at") else None,
        callback_url=p.callback_url,
        labels=dict(p.labels) if len(p.labels) else EMPTY,
        created_by=created_by,
        group_key=p.group_key,
    )
    return NewNotify(spec, request_id, schedule=which, delay_s=delay)


def _request(r: Request, secret: frozenset[str] | None = None) -> pb.HttpRequest:
    """secret: header names whose values read <redacted> (None: none, for grants only)."""
    headers = redact(r.headers, secret) if secret and r.headers else r.headers
    return pb.HttpRequest(
        method=NUMBER_BY_METHOD.get(r.method, 0), url=r.url, headers=headers, body=r.body, json_body=r.json_body,
        form_body=r.form,
    )  # fmt: skip


def grant_notify(n: Notification) -> pb.Notify:
    """What a dispatcher needs to make the call: id, request, timeout, success criteria."""
    out = pb.Notify()
    fill_grant_notify(out, n)
    return out


def fill_grant_notify(out: pb.Notify, n: Notification) -> None:
    """grant_notify into an empty message in place (a grant's own field: nothing is copied)."""
    out.MergeFromString(_fixed_bytes(n.spec, None))
    out.id = n.id


def notify_to_proto(n: Notification, *, with_attempts: bool = True, secret: frozenset[str] = ALWAYS_SECRET) -> pb.Notify:
    """A notify for an API answer: secret header values read <redacted> (sealing.secret_names)."""
    out = pb.Notify()
    fill_notify(out, n, with_attempts=with_attempts, secret=secret)
    return out


def fill_notify(out: pb.Notify, n: Notification, *, with_attempts: bool = True, secret: frozenset[str] = ALWAYS_SECRET) -> None:
    """notify_to_proto into an empty message in place (e.g. a response's repeated field: no copy)."""
    s = n.spec
    out.MergeFromString(_fixed_bytes(s, secret))  # request, policies, fire_and_forget
    # Field by field, only what is set: passing maps and messages to the constructor costs more.
    out.id = n.id
    out.queue = s.queue
    out.state = int(n.state)
    if s.ordering_key:
        out.ordering_key = s.ordering_key
    if s.callback_url:
        out.callback_url = s.callback_url
    if n.unreadable:
        out.labels.update({**s.labels, UNREADABLE_LABEL: n.unreadable})
    elif s.labels:
        out.labels.update(s.labels)
    _set_ms(out.create_time, n.create_ms)
    out.attempt_count = n.attempt_count
    if s.created_by:
        out.created_by = s.created_by
    if s.group_key:
        out.group_key = s.group_key
    if s.trigger_key:
        out.trigger_key = s.trigger_key
    elif s.deliver_at_ms is not None:
        _set_ms(out.deliver_at, s.deliver_at_ms)
    if s.expire_at_ms is not None:
        _set_ms(out.expire_at, s.expire_at_ms)
    if n.due_ms is not None and not n.state.terminal and n.state != State.WAITING_TRIGGER:
        _set_ms(out.next_attempt_time, n.due_ms)
    if n.complete_ms is not None:
        _set_ms(out.complete_time, n.complete_ms)
    if with_attempts and n.attempts:
        out.attempts.extend(attempt_to_proto(a) for a in n.attempts)


def _set_ms(t: timestamp_pb2.Timestamp, ms: int) -> None:
    """Timestamp.FromMilliseconds without its Python-level checks; setting a field marks t present."""
    t.seconds, t.nanos = ms // 1000, ms % 1000 * 1_000_000


def _fixed_bytes(s: Spec, secret: frozenset[str] | None) -> bytes:
    """A Notify's request, policies and fire_and_forget, serialized once per Request object
    (and secret names): notifies that share one Request (model.plain_request) share these
    bytes too. Requests hold maps (no hash by value), so the key is the object's id, and the
    entry keeps the object so that id is never reused while it is cached."""
    key = (id(s.request), s.retry, s.success, s.timeout, s.fire_and_forget, secret)
    cached = _FIXED.get(key)
    if cached is None or cached[0] is not s.request:
        out = pb.Notify(request=_request(s.request, secret), fire_and_forget=s.fire_and_forget)
        cached = (s.request, out.SerializeToString() + codec.policy_bytes(s.retry, s.success, s.timeout))
        if len(cached[1]) > _CACHED_FIXED:
            return cached[1]  # a big body is not kept alive by the cache (4096 of them could be gigabytes)
        if len(_FIXED) >= 4096:
            _FIXED.clear()
        _FIXED[key] = cached
    return cached[1]


_FIXED: dict[tuple, tuple[Request, bytes]] = {}
_CACHED_FIXED = 4096  # bytes: at most 4096 entries of this, with their Requests, stay cached


def attempt_to_proto(a: AttemptRecord) -> pb.Attempt:
    return pb.Attempt(
        number=a.number,
        start_time=timestamp(a.start_ms),
        end_time=timestamp(a.end_ms),
        dispatcher_id=a.dispatcher_id,
        status_code=a.status_code,
        error=a.error,
        latency=duration((a.end_ms - a.start_ms) / 1000),
        response_snippet=a.snippet,
        success=a.success,
        response_headers=a.headers,
    )


def group_to_proto(g: GroupStatus) -> pb.Group:
    out = pb.Group(
        group_key=g.key,
        counts=[pb.Group.StateCount(state=int(s), count=c) for s, c in sorted(g.counts.items())],
        total=g.total,
        done=g.done,
        callback_url=g.callback_url,
        callback_notify_id=g.callback_id,
    )
    if g.done_ms is not None:
        out.done_time.CopyFrom(timestamp(g.done_ms))
    if g.callback_ms is not None:
        out.callback_time.CopyFrom(timestamp(g.callback_ms))
    return out
