"""What the engine and the API operations share: updatable fields, new notifies, callbacks."""

from __future__ import annotations

import json

from ...common.ids import IdGenerator
from .model import AttemptRecord, GroupStatus, NewNotify, Notification, Request, Spec, State

# UpdateNotify mask paths and the Spec fields each one replaces.
UPDATABLE = {
    "request": ("request",),
    "schedule": ("deliver_at_ms", "trigger_key"),
    "retry": ("retry",),
    "success": ("success",),
    "fire_and_forget": ("fire_and_forget",),
    "timeout": ("timeout",),
    "expire_at": ("expire_at_ms",),
    "callback_url": ("callback_url",),
    "labels": ("labels",),
}
CALLBACK_QUEUE = "callbacks"


def callback_body(n: Notification, last: AttemptRecord | None, reason: str) -> str:
    """JSON for a result callback: id, final state and a summary of the attempts."""
    doc = {
        "id": n.id,
        "state": n.state.name,
        "reason": reason,
        "attempts": n.attempt_count,
        "last_attempt": None if last is None else {
            "number": last.number, "status_code": last.status_code, "error": last.error,
            "start_time_ms": last.start_ms, "end_time_ms": last.end_ms,
        },
        "create_time_ms": n.create_ms,
        "complete_time_ms": n.complete_ms,
        "labels": n.spec.labels,
    }  # fmt: skip
    return json.dumps(doc, separators=(",", ":"))


def group_callback(g: GroupStatus, now: int, ids: IdGenerator, partition: int = 0) -> Notification:
    """The POST to a group's callback_url once its last member ended, as a notify of its own."""
    doc = {
        "group_key": g.key,
        "done": g.done,
        "total": g.total,
        "counts": {s.name: c for s, c in sorted(g.counts.items())},
        "done_time_ms": g.done_ms,
    }
    spec = Spec(
        request=Request(method="POST", url=g.callback_url, json_body=json.dumps(doc, separators=(",", ":"))),
        queue=CALLBACK_QUEUE,
        labels={"callback_for_group": g.key},
    )
    return new_notification(NewNotify(spec), now, ids, partition)


def first_state(trigger_key: str, deliver_at_ms: int | None, now: int) -> tuple[State, int | None]:
    """A new notify's first state and due time, from its schedule."""
    if trigger_key:
        return State.WAITING_TRIGGER, None
    if deliver_at_ms is not None and deliver_at_ms > now:
        return State.SCHEDULED, deliver_at_ms
    return State.PENDING, now


def new_notification(new: NewNotify, now: int, ids: IdGenerator, partition: int = 0) -> Notification:
    """A notify as created: its id, and its first state and due time from its schedule."""
    spec = new.spec
    state, due = first_state(spec.trigger_key, spec.deliver_at_ms, now)
    return Notification(id=ids.new(now, partition=partition), spec=spec, state=state, create_ms=now, request_id=new.request_id, due_ms=due)
