"""Spec <-> the stores' spec column; rows <-> Notification.

The spec column holds a StoredSpec (proto/notifyagent/v1/storage.proto) as bytes. Stores
written before it hold JSON there: both are read (a str, or bytes starting with "{", is
JSON), so an old store opens as it is and its rows are never rewritten. With a SecretBox
(NOTIFY_SECRET_KEY) the secret header values leave the request's headers and are stored
sealed, as one token: StoredSpec.sealed_headers (JSON specs: under "hs").

This module is the one place in the store that knows protobuf: it imports the store's own
message (storage_pb2) and nothing of the API (tests/test_structure.py)."""

from __future__ import annotations

import base64
import functools
import json
from typing import Sequence

from ...common.calls import DEFAULT_METHOD, DEFAULT_TIMEOUT_S, METHOD_BY_NUMBER, NUMBER_BY_METHOD
from ...common.sealing import SecretBox, SecretKeyError, open_sealed
from ...v1 import storage_pb2
from ..engine.model import (EMPTY, AttemptRecord, GroupStatus, Notification, Request, RetryPolicy, Spec, State, Success,
                            plain_request, shared)

_JSON = json.JSONEncoder(separators=(",", ":"))  # one encoder: json.dumps with options builds one per call
_STORED = storage_pb2.StoredSpec
_NOTIFY = type(_STORED().spec)  # notifyagent.v1.Notify, the message StoredSpec.spec holds
_DEFAULT_METHOD = NUMBER_BY_METHOD[DEFAULT_METHOD]
DEFAULT_RETRY = RetryPolicy()
DEFAULT_SUCCESS = Success()

COLUMNS = (
    "id, request_id, state, queue, ordering_key, trigger_key, due_ms, create_ms,"
    " complete_ms, attempt_count, budget_base, first_attempt_ms, spec, group_key"
)
COLUMN_COUNT = COLUMNS.count(",") + 1
# What an insert writes: the columns read back, and `labels` (the spec's labels as JSON, ''
# without any), which only the label filter of ListNotifies reads.
INSERT_COLUMNS = COLUMNS + ", labels"
INSERT_COUNT = COLUMN_COUNT + 1
ATTEMPT_COLUMNS = "number, start_ms, end_ms, dispatcher_id, status_code, error, success, snippet, headers"


# --- StoredSpec: Spec -> bytes ---------------------------------------------------


def spec_to_bytes(spec: Spec, box: SecretBox | None = None) -> bytes:
    """The spec as a serialized StoredSpec. The request and the policies are serialized once
    per Request object and per distinct policy (notifies share them: model.plain_request,
    model.shared) and the parts are joined: serialized messages concatenate."""
    r = spec.request
    if box is not None and r.headers and any(k.lower() in box.names for k in r.headers):
        plain, sealed = box.seal(r.headers)
        head = _field(1, sealed.encode())
        inner = _request_bytes(r, plain)
    else:
        head = b""
        inner = _cached_request_bytes(r)
    inner += policy_bytes(spec.retry, spec.success, spec.timeout)
    rest = _NOTIFY()
    if spec.deliver_at_ms is not None:
        set_ms(rest.deliver_at, spec.deliver_at_ms)
    if spec.fire_and_forget:
        rest.fire_and_forget = True
    if spec.expire_at_ms is not None:
        set_ms(rest.expire_at, spec.expire_at_ms)
    if spec.callback_url:
        rest.callback_url = spec.callback_url
    if spec.labels:
        rest.labels.update(spec.labels)
    if spec.created_by:
        rest.created_by = spec.created_by
    return head + _field(2, inner + rest.SerializeToString())


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2) of a message, as protobuf encodes it."""
    size, out = len(payload), bytearray([number << 3 | 2])
    while size > 0x7F:
        out.append(size & 0x7F | 0x80)
        size >>= 7
    out.append(size)
    return bytes(out) + payload


def _request_bytes(r: Request, headers) -> bytes:
    m = _NOTIFY()
    q = m.request
    q.method = NUMBER_BY_METHOD.get(r.method, 0)
    q.url = r.url
    if headers:
        q.headers.update(headers)
    if r.body:
        q.body = r.body
    if r.json_body:
        q.json_body = r.json_body
    if r.form:
        q.form_body.update(r.form)
    return m.SerializeToString()


def _cached_request_bytes(r: Request) -> bytes:
    """Keyed by the object (Requests hold maps: no hash by value); the entry keeps the object,
    so its id is never reused while cached. Big requests are not kept alive by the cache."""
    cached = _REQUESTS.get(id(r))
    if cached is None or cached[0] is not r:
        data = _request_bytes(r, r.headers)
        if len(data) > _CACHED_REQUEST:
            return data
        if len(_REQUESTS) >= 4096:
            _REQUESTS.clear()
        cached = _REQUESTS[id(r)] = (r, data)
    return cached[1]


_REQUESTS: dict[int, tuple[Request, bytes]] = {}
_CACHED_REQUEST = 4096  # bytes


def set_ms(t, ms: int) -> None:
    """A Timestamp field set to ms (setting a field marks the timestamp present)."""
    t.seconds, t.nanos = ms // 1000, ms % 1000 * 1_000_000


def millis(t) -> int:
    return t.seconds * 1000 + t.nanos // 1_000_000


def seconds(d) -> float:
    return d.seconds + d.nanos / 1e9


_MAX_DURATION_S = 315_576_000_000  # what a Duration can hold (10,000 years)


def set_seconds(d, s: float) -> None:
    d.FromNanoseconds(int(round(min(max(s, -_MAX_DURATION_S), _MAX_DURATION_S) * 1e9)))


@functools.lru_cache(maxsize=1024)
def policy_bytes(retry: RetryPolicy, success: Success, timeout_s: float) -> bytes:
    """A Notify's retry, success and timeout fields, every value explicit, serialized once per
    distinct policy (a handful serve many notifies): the stored spec and API answers use them."""
    m = _NOTIFY()
    rp = m.retry
    rp.max_attempts = retry.max_attempts
    set_seconds(rp.min_backoff, retry.min_backoff)
    set_seconds(rp.max_backoff, retry.max_backoff)
    rp.multiplier = retry.multiplier
    set_seconds(rp.max_retry_duration, retry.max_retry_duration)
    rp.retry_codes.extend(retry.retry_codes)
    sc = m.success
    sc.SetInParent()
    sc.status_codes.extend(success.status_codes)
    sc.body_contains = success.body_contains
    sc.mismatch_final = success.mismatch_final
    set_seconds(m.timeout, timeout_s)
    return m.SerializeToString()


# --- the create path: the caller's Notify message -> a row ---------------------------


def new_row(new, notify_id: str, state: State, due_ms: int | None, create_ms: int) -> tuple:
    """The INSERT_COLUMNS of a new notify made from the caller's message (validate.Incoming,
    checked), which becomes the stored spec in place (normalize); the store encodes it
    (encode_message) in the spec's place."""
    m = new.message
    normalize(m, deliver_at_ms=new.deliver_at_ms, created_by=new.created_by)
    labels = _JSON.encode(dict(m.labels)) if len(m.labels) else ""
    return (notify_id, new.request_id, int(state), new.queue, new.ordering_key, new.trigger_key, due_ms, create_ms,
            None, 0, 0, None, m, new.group_key, labels)  # fmt: skip


_OUTPUT_ONLY_TIMES = ("create_time", "next_attempt_time", "complete_time")


def normalize(m, *, deliver_at_ms: int | None, created_by: str) -> None:
    """A caller's Notify, in place, as the store keeps it: a delay as the deliver_at it gives,
    the default method spelled out, created_by set, output-only and unknown fields dropped."""
    if m.HasField("delay"):
        set_ms(m.deliver_at, deliver_at_ms)  # the oneof: delay is cleared
    if not m.request.method:
        m.request.method = _DEFAULT_METHOD
    if m.id:
        m.id = ""
    if m.state:
        m.state = 0
    if len(m.attempts):
        del m.attempts[:]
    if m.attempt_count:
        m.attempt_count = 0
    for name in _OUTPUT_ONLY_TIMES:
        if m.HasField(name):
            m.ClearField(name)
    m.created_by = created_by
    m.DiscardUnknownFields()


def encode_message(m, box: SecretBox | None = None) -> bytes:
    """A normalized Notify as a StoredSpec's bytes, its secret header values sealed (with a box)."""
    headers = m.request.headers
    if box is not None and len(headers) and any(k.lower() in box.names for k in headers):
        plain, sealed = box.seal(dict(headers))
        copy = _NOTIFY()
        copy.CopyFrom(m)
        copy.request.headers.clear()
        copy.request.headers.update(plain)
        return _field(1, sealed.encode()) + _field(2, copy.SerializeToString())
    return _field(2, m.SerializeToString())


def encode_rows(rows: list[tuple], box: SecretBox | None) -> list[tuple]:
    """new_row's rows with their spec encoded."""
    return [(*r[:12], encode_message(r[12], box), *r[13:]) for r in rows]


# --- StoredSpec: bytes -> Spec ---------------------------------------------------


def spec_from_bytes(
    data: bytes, *, trigger_key: str, ordering_key: str, queue: str, group_key: str = "",
    box: SecretBox | None = None, where: str = "a notify",
) -> Spec:  # fmt: skip
    stored = _STORED.FromString(data)
    sealed = open_sealed(box, stored.sealed_headers, where) if stored.sealed_headers else None
    return spec_from_message(stored.spec, trigger_key=trigger_key, ordering_key=ordering_key, queue=queue,
                             group_key=group_key, sealed=sealed)  # fmt: skip


def spec_from_message(
    m, *, trigger_key: str, ordering_key: str, queue: str, group_key: str = "", sealed: dict[str, str] | None = None
) -> Spec:
    """The domain Spec of a stored (normalized) Notify; sealed: its secret headers, opened."""
    r = m.request
    headers = dict(r.headers) if len(r.headers) else EMPTY
    if sealed:
        headers = {**headers, **sealed}
    method = METHOD_BY_NUMBER[r.method]  # stored methods were valid: another is a broken row
    form = dict(r.form_body) if len(r.form_body) else EMPTY
    if headers or form:
        request = Request(method=method, url=r.url, headers=headers, body=r.body, json_body=r.json_body, form=form)
    else:
        request = plain_request(method, r.url, r.body, r.json_body)
    return Spec(
        request=request,
        deliver_at_ms=millis(m.deliver_at) if m.HasField("deliver_at") else None,
        trigger_key=trigger_key,
        ordering_key=ordering_key,
        queue=queue,
        retry=cached(retry_policy, m.retry.SerializeToString()) if m.HasField("retry") else DEFAULT_RETRY,
        success=cached(success_criteria, m.success.SerializeToString()) if m.HasField("success") else DEFAULT_SUCCESS,
        fire_and_forget=m.fire_and_forget,
        timeout=seconds(m.timeout) if m.HasField("timeout") else DEFAULT_TIMEOUT_S,
        expire_at_ms=millis(m.expire_at) if m.HasField("expire_at") else None,
        callback_url=m.callback_url,
        labels=dict(m.labels) if len(m.labels) else EMPTY,
        created_by=m.created_by,
        group_key=group_key,
    )


_CACHED_WIRE = 512  # larger wire forms are converted each time: a cache must not hold what callers send in bulk


def cached(convert, wire: bytes):
    return convert(wire) if len(wire) <= _CACHED_WIRE else convert.__wrapped__(wire)


@functools.lru_cache(maxsize=1024)
def retry_policy(wire: bytes) -> RetryPolicy:
    """A RetryPolicy from its wire form, unset fields taking the defaults (cached: most callers
    send a few policies many times, and held notifies then share one object)."""
    rp = _NOTIFY.FromString(_field(9, wire)).retry
    min_backoff = seconds(rp.min_backoff) if rp.HasField("min_backoff") else DEFAULT_RETRY.min_backoff
    if rp.HasField("max_backoff"):
        max_backoff = seconds(rp.max_backoff)
    else:  # a min_backoff above the default cap raises the cap with it
        max_backoff = max(DEFAULT_RETRY.max_backoff, min_backoff) if rp.HasField("min_backoff") else DEFAULT_RETRY.max_backoff
    return RetryPolicy(
        max_attempts=rp.max_attempts or DEFAULT_RETRY.max_attempts,
        min_backoff=min_backoff,
        max_backoff=max_backoff,
        multiplier=rp.multiplier or DEFAULT_RETRY.multiplier,
        max_retry_duration=(
            seconds(rp.max_retry_duration) if rp.HasField("max_retry_duration") else DEFAULT_RETRY.max_retry_duration
        ),
        retry_codes=tuple(rp.retry_codes),
    )


@functools.lru_cache(maxsize=1024)
def success_criteria(wire: bytes) -> Success:
    sc = _NOTIFY.FromString(_field(10, wire)).success
    return Success(tuple(sc.status_codes), sc.body_contains, sc.mismatch_final)


# --- JSON specs (stores written before StoredSpec): read only ------------------------


def spec_from_json(
    text: str, *, trigger_key: str, ordering_key: str, queue: str, group_key: str = "",
    box: SecretBox | None = None, where: str = "a notify",
) -> Spec:
    d = json.loads(text)
    r = d["r"]
    headers = d["h"]
    if "hs" in d:
        headers = {**headers, **open_sealed(box, d["hs"], where)}
    body = base64.b64decode(d["b"]) if d["b"] else b""
    # Held notifies share what they have in common: one Request per plain call, one policy object each.
    if headers or d["f"]:
        request = Request(method=d["m"], url=d["u"], headers=headers or EMPTY, body=body, json_body=d["j"], form=d["f"] or EMPTY)
    else:
        request = plain_request(d["m"], d["u"], body, d["j"])
    return Spec(
        request=request,
        deliver_at_ms=d["at"],
        trigger_key=trigger_key,
        ordering_key=ordering_key,
        queue=queue,
        retry=shared(RetryPolicy(r[0], r[1], r[2], r[3], r[4], tuple(r[5]))),
        success=shared(Success(tuple(d["s"][0]), d["s"][1], bool(d["s"][2:3] and d["s"][2]))),
        fire_and_forget=d["ff"],
        timeout=d["t"],
        expire_at_ms=d["x"],
        callback_url=d["cb"],
        labels=d["l"] or EMPTY,
        created_by=d.get("by", ""),
        group_key=group_key,
    )


def to_row(n: Notification, box: SecretBox | None = None) -> tuple:
    """The values of INSERT_COLUMNS."""
    s = n.spec
    return (
        n.id, n.request_id, int(n.state), s.queue, s.ordering_key, s.trigger_key, n.due_ms, n.create_ms,
        n.complete_ms, n.attempt_count, n.budget_base, n.first_attempt_ms, spec_to_bytes(s, box), s.group_key,
        labels_json(s),
    )  # fmt: skip


def labels_json(spec: Spec) -> str:
    """The labels column: the spec's labels as a JSON object ('' without any)."""
    return _JSON.encode(spec.labels) if spec.labels else ""


def spec_from_column(
    value: str | bytes, *, trigger_key: str, ordering_key: str, queue: str, group_key: str = "",
    box: SecretBox | None = None, where: str = "a notify",
) -> Spec:  # fmt: skip
    """The spec column as either format: a StoredSpec's bytes, or JSON (text, or its UTF-8 bytes)."""
    if isinstance(value, str):
        return spec_from_json(value, trigger_key=trigger_key, ordering_key=ordering_key, queue=queue,
                              group_key=group_key, box=box, where=where)  # fmt: skip
    value = bytes(value)
    if value[:1] == b"{":  # a StoredSpec never starts so: field 15 as a group
        return spec_from_json(value.decode(), trigger_key=trigger_key, ordering_key=ordering_key, queue=queue,
                              group_key=group_key, box=box, where=where)  # fmt: skip
    return spec_from_bytes(value, trigger_key=trigger_key, ordering_key=ordering_key, queue=queue,
                           group_key=group_key, box=box, where=where)  # fmt: skip


def from_row(row: Sequence, box: SecretBox | None = None) -> Notification:
    """A row as a Notification. A row that cannot be decoded (written by a broken or newer
    version, or by hand) comes back marked unreadable instead of raising: reads never fail.
    A wrong or missing NOTIFY_SECRET_KEY is the operator's to fix and still raises."""
    (nid, request_id, state, queue, okey, tkey, due, create, complete, count, base, first, spec, gkey) = row
    try:
        decoded = spec_from_column(spec, trigger_key=tkey, ordering_key=okey, queue=queue, group_key=gkey,
                                 box=box, where=f"notify {nid}")  # fmt: skip
        st = State(state)
        problem = ""
    except SecretKeyError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoding error makes the row unreadable, not the read
        decoded = Spec(request=Request(method="GET", url=""), trigger_key=str(tkey), ordering_key=str(okey),
                       queue=str(queue), group_key=str(gkey))  # fmt: skip
        st = State(state) if state in State._value2member_map_ else State.FAILED
        problem = f"stored row cannot be decoded: {type(e).__name__}: {str(e)[:200]}"
    return Notification(
        id=nid,
        spec=decoded,
        state=st,
        create_ms=create,
        request_id=request_id,
        due_ms=due,
        complete_ms=complete,
        attempt_count=count,
        budget_base=base,
        first_attempt_ms=first,
        unreadable=problem,
    )


def attempt_row(notify_id: str, a: AttemptRecord) -> tuple:
    headers = _JSON.encode(a.headers) if a.headers else ""
    return (notify_id, a.number, a.start_ms, a.end_ms, a.dispatcher_id, a.status_code, a.error, a.success, a.snippet, headers)


def attempt_from_row(row: Sequence) -> AttemptRecord:
    number, start, end, dispatcher, code, error, success, snippet, headers = row
    return AttemptRecord(number, start, end, dispatcher, code, error, bool(success), bytes(snippet or b""),
                         _headers_from_json(headers))  # fmt: skip


def _headers_from_json(text: str | None) -> dict[str, str]:
    """Response headers of an attempt; rows from before they were kept have none."""
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}


def group_status(key: str, counts: Sequence[Sequence], callback: Sequence | None) -> GroupStatus | None:
    """A GroupStatus from (state, count, max complete_ms) rows and the (callback_url,
    callback_ms, callback_id) row of the groups table; None when there is neither."""
    if not counts and callback is None:
        return None
    ends = [end for _, _, end in counts if end is not None]
    url, at, made = callback if callback is not None else ("", None, "")
    return GroupStatus(key, {State(s): c for s, c, _ in counts}, max(ends) if ends else None, url, at, made)


def ended_groups(writes) -> list[str]:
    """The group keys of notifies that these writes end, each once, sorted (a lock order)."""
    return sorted({w.notify.spec.group_key for w in writes if w.notify.spec.group_key and w.notify.state.terminal})


def result_rows(writes, box: SecretBox | None = None) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """The rows of save_results (states, attempts, follow-up notifies), taken when called:
    the engine may change these notifies (a cancel) before the store's writer runs."""
    states = [
        (int(w.notify.state), w.notify.due_ms, w.notify.complete_ms, w.notify.attempt_count,
         w.notify.first_attempt_ms, w.notify.id)
        for w in writes
    ]  # fmt: skip
    attempts = [attempt_row(w.notify.id, w.attempt) for w in writes if w.attempt is not None]
    follow_ups = [to_row(w.follow_up, box) for w in writes if w.follow_up is not None]
    return states, attempts, follow_ups


def check_sealed(row: Sequence | None, box: SecretBox | None) -> None:
    """At open: one stored sealed spec (the stores' SEALED_SAMPLE query, either format) must open
    with the keys given (a wrong key says so at once)."""
    if row is None:
        return
    nid, value = row
    if isinstance(value, str) or bytes(value[:1]) == b"{":
        doc = json.loads(value)
        token = doc.get("hs", "")
    else:
        token = _STORED.FromString(bytes(value)).sealed_headers
    if token:
        open_sealed(box, token, f"notify {nid}")
