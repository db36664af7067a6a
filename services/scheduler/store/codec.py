"""Spec <-> JSON for the stores (the spec column); rows <-> Notification.

With a SecretBox (NOTIFY_SECRET_KEY) the secret header values leave the
spec's "h" map and are stored sealed, as one token under "hs"."""

from __future__ import annotations

import base64
import json
from typing import Any, Sequence

from ...common.sealing import SecretBox, SecretKeyError, open_sealed
from ..engine.model import (EMPTY, AttemptRecord, GroupStatus, Notification, Request, RetryPolicy, Spec, State, Success,
                            plain_request, shared)

_JSON = json.JSONEncoder(separators=(",", ":"))  # one encoder: json.dumps with options builds one per call

COLUMNS = (
    "id, request_id, state, queue, ordering_key, trigger_key, due_ms, create_ms,"
    " complete_ms, attempt_count, budget_base, first_attempt_ms, spec, group_key"
)
COLUMN_COUNT = COLUMNS.count(",") + 1
ATTEMPT_COLUMNS = "number, start_ms, end_ms, dispatcher_id, status_code, error, success, snippet, headers"


def spec_to_json(spec: Spec, box: SecretBox | None = None) -> str:
    r, p, s = spec.request, spec.retry, spec.success
    headers, sealed = box.seal(r.headers) if box is not None and r.headers else (r.headers, "")
    doc: dict[str, Any] = {
        "m": r.method,
        "u": r.url,
        "h": headers,
        "b": base64.b64encode(r.body).decode() if r.body else "",
        "j": r.json_body,
        "f": r.form,
        "at": spec.deliver_at_ms,
        "r": [p.max_attempts, p.min_backoff, p.max_backoff, p.multiplier, p.max_retry_duration, list(p.retry_codes)],
        "s": [list(s.status_codes), s.body_contains, *([True] if s.mismatch_final else [])],
        "ff": spec.fire_and_forget,
        "t": spec.timeout,
        "x": spec.expire_at_ms,
        "cb": spec.callback_url,
        "l": spec.labels,
    }
    if sealed:
        doc["hs"] = sealed
    if spec.created_by:
        doc["by"] = spec.created_by
    return _JSON.encode(doc)


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
    s = n.spec
    return (
        n.id, n.request_id, int(n.state), s.queue, s.ordering_key, s.trigger_key, n.due_ms, n.create_ms,
        n.complete_ms, n.attempt_count, n.budget_base, n.first_attempt_ms, spec_to_json(s, box), s.group_key,
    )  # fmt: skip


def from_row(row: Sequence, box: SecretBox | None = None) -> Notification:
    """A row as a Notification. A row that cannot be decoded (written by a broken or newer
    version, or by hand) comes back marked unreadable instead of raising: reads never fail.
    A wrong or missing NOTIFY_SECRET_KEY is the operator's to fix and still raises."""
    (nid, request_id, state, queue, okey, tkey, due, create, complete, count, base, first, spec, gkey) = row
    try:
        decoded = spec_from_json(spec, trigger_key=tkey, ordering_key=okey, queue=queue, group_key=gkey,
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


SEALED_SAMPLE = """SELECT id, spec FROM notifies WHERE spec LIKE '%"hs":%' LIMIT 1"""


def check_sealed(row: Sequence | None, box: SecretBox | None) -> None:
    """At open: one stored sealed spec must open with the keys given (a wrong key says so at once)."""
    if row is not None:
        nid, text = row
        doc = json.loads(text)
        if "hs" in doc:
            open_sealed(box, doc["hs"], f"notify {nid}")
