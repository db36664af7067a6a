"""The one validation layer: every bound on what callers send, as field violations.

Each operation of the engine checks its input here before it touches memory or
the store; the transport only converts (api/convert.py). Every string, map,
time and size has a bound (Limits, documented in the README's bounds table),
so nothing that passes can overflow the arithmetic, the proto timestamps or
the store, and nothing that fails is stored.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

from .errors import InvalidArgument
from .limits import DAY, Limits, notify_size, show  # noqa: F401 - Limits and notify_size are part of this layer
from .validate_request import ANY_CONTROL, check_request, check_url, json_problem  # noqa: F401 - json_problem too
from .model import ListFilter, NewGroup, NewNotify, QueueConfig, RetryPolicy, Spec, Success

_KEY = re.compile(r"^[A-Za-z0-9._:/@+\-=]{1,200}$")
_ID = re.compile(r"^[A-Za-z0-9._:@+\-=]{1,64}$")
KEY_RULE = "must be 1-200 characters of letters, digits and ._:/@+-="

# --- notifies ----------------------------------------------------------------


class Incoming(NamedTuple):
    """A notify to create as the transport received it: the caller's Notify message itself
    (read here field by field, never converted) and what the transport read off it once,
    policies already in their domain form (shared objects: a few serve many notifies)."""

    message: Any  # notifyagent.v1.Notify; the engine reads it, api/convert.py made this
    request_id: str
    schedule: str  # which schedule the caller set: deliver_at, delay, trigger_key or ''
    delay_s: float | None  # the delay as given (deliver_at_ms is now + delay)
    deliver_at_ms: int | None
    trigger_key: str
    ordering_key: str
    queue: str
    group_key: str
    method: str  # the method's name, or "#N" for a number that names none
    retry: RetryPolicy
    success: Success
    timeout: float
    expire_at_ms: int | None
    created_by: str


def check_incoming(new: Incoming, *, now_ms: int, limits: Limits, prefix: str = "notify", size=None) -> list[tuple[str, str]]:
    """Violations of a notify to create (empty when it is valid): check_spec's rules, bounds and
    violations read off the caller's message, without building a Spec (only notifies that
    memory takes get one)."""
    out = _check_request_id(new.request_id, prefix) if new.request_id else []
    out += _check_schedule_input(new.delay_s, new.schedule, new.trigger_key, limits=limits, prefix=prefix)
    m = new.message
    r = m.request
    out += _check_values(
        prefix, limits, now_ms, method=new.method, url=r.url, headers=r.headers, body=r.body, json_body=r.json_body,
        form=r.form_body, deliver_at_ms=new.deliver_at_ms, trigger_key=new.trigger_key, ordering_key=new.ordering_key,
        queue=new.queue, group_key=new.group_key, timeout=new.timeout, retry=new.retry, success=new.success,
        expire_at_ms=new.expire_at_ms, callback_url=m.callback_url, labels=m.labels, size=size,
    )  # fmt: skip
    return out


def incoming_size(new: Incoming) -> int:
    """limits.notify_size of the notify this message makes."""
    m = new.message
    r = m.request
    return _size(r.url, r.body, r.json_body, m.callback_url, r.headers, r.form_body, m.labels, new.success.body_contains)


def _size(url, body, json_body, callback_url, headers, form, labels, body_contains) -> int:
    """limits.notify_size from the values (maps: dicts or protobuf maps)."""
    size = len(url) + len(body) + len(json_body.encode("utf-8", "replace")) + len(callback_url) + len(body_contains) + 1024
    for m in (headers, form, labels):
        if len(m):
            size += sum(len(k) + len(v) + 8 for k, v in m.items())
    return size


def _check_request_id(rid: str, prefix: str) -> list[tuple[str, str]]:
    if len(rid) > 256 or ANY_CONTROL.search(rid):
        return [(prefix.replace("notify", "request_id"), "must be at most 256 characters without control characters")]
    return []


def check_schedule_input(new: NewNotify, *, limits: Limits, prefix: str) -> list[tuple[str, str]]:
    """What only the wire form tells: a delay given as such, a trigger key set but empty."""
    return _check_schedule_input(new.delay_s, new.schedule, new.spec.trigger_key, limits=limits, prefix=prefix)


def _check_schedule_input(delay_s, schedule: str, trigger_key: str, *, limits: Limits, prefix: str) -> list[tuple[str, str]]:
    out = []
    if delay_s is not None and not 0 <= delay_s <= limits.max_schedule_ahead_s:
        out.append((f"{prefix}.delay", f"must be 0 to {limits.max_schedule_ahead_s:.0f} s (not negative)"))
    if schedule == "trigger_key" and not trigger_key:
        out.append((f"{prefix}.trigger_key", "must not be empty when set"))
    return out


def check_spec(spec: Spec, *, now_ms: int, limits: Limits, prefix: str = "notify") -> list[tuple[str, str]]:
    """Returns the violations of spec (empty when it is valid)."""
    r = spec.request
    return _check_values(
        prefix, limits, now_ms, method=r.method, url=r.url, headers=r.headers, body=r.body, json_body=r.json_body,
        form=r.form, deliver_at_ms=spec.deliver_at_ms, trigger_key=spec.trigger_key, ordering_key=spec.ordering_key,
        queue=spec.queue, group_key=spec.group_key, timeout=spec.timeout, retry=spec.retry, success=spec.success,
        expire_at_ms=spec.expire_at_ms, callback_url=spec.callback_url, labels=spec.labels,
    )  # fmt: skip


def _check_values(
    prefix: str, limits: Limits, now_ms: int, *, method, url, headers, body, json_body, form, deliver_at_ms, trigger_key,
    ordering_key, queue, group_key, timeout, retry, success, expire_at_ms, callback_url, labels, size=None,
) -> list[tuple[str, str]]:  # fmt: skip
    """The rules of check_spec on a notify's values; maps may be dicts or protobuf maps."""
    out: list[tuple[str, str]] = []
    add = lambda f, d: out.append((f"{prefix}.{f}", d))  # noqa: E731
    check_request(method, url, headers, body, json_body, form, add, limits)
    if deliver_at_ms is not None:
        if deliver_at_ms < now_ms - limits.max_schedule_past_s * 1000:
            add("schedule", f"deliver_at is more than {limits.max_schedule_past_s:.0f} s in the past")
        if deliver_at_ms > now_ms + limits.max_schedule_ahead_s * 1000:
            add("schedule", f"schedule is more than {limits.max_schedule_ahead_s:.0f} s ahead (the horizon limit)")
    for fname, key in (("trigger_key", trigger_key), ("ordering_key", ordering_key), ("queue", queue),
                       ("group_key", group_key)):  # fmt: skip
        if key and not _KEY.fullmatch(key):  # fullmatch: `$` lets a trailing newline through
            add(fname, KEY_RULE)
    if not 0 < timeout <= limits.max_timeout_s:
        add("timeout", f"must be more than 0 and at most {limits.max_timeout_s:.0f} s")
    if retry != _VALID_RETRY:
        _check_retry(retry, add, limits)
    if success.status_codes:
        _check_codes(success.status_codes, "success.status_codes", add, limits)
    if len(success.body_contains) > limits.max_body_contains:
        add("success.body_contains", f"is longer than {limits.max_body_contains} characters")
    if expire_at_ms is not None:
        if expire_at_ms <= now_ms:
            add("expire_at", "is already in the past")
        elif expire_at_ms > now_ms + limits.max_expire_ahead_s * 1000:
            add("expire_at", f"is more than {limits.max_expire_ahead_s:.0f} s ahead")
    if callback_url:
        check_url(callback_url, "callback_url", add, limits)
    if len(labels):
        _check_labels(labels, add, limits)
    if not out:
        size = _size(url, body, json_body, callback_url, headers, form, labels, success.body_contains) if size is None else size
        if size > limits.max_notify_bytes:
            add("request", f"the notify takes about {size} bytes; one grant message holds {limits.max_notify_bytes}")
    return out


_VALID_RETRY = RetryPolicy()  # the default policy is valid under any Limits (its codes are empty)


def check_group_key(key: str, fname: str = "group_key", *, required: bool = True) -> list[tuple[str, str]]:
    """The violations of a group key named on its own (GetGroup, CancelGroup, a list filter)."""
    if not key:
        return [(fname, "is required")] if required else []
    return [] if _KEY.fullmatch(key) else [(fname, KEY_RULE)]


def check_group(group: NewGroup, *, limits: Limits) -> list[tuple[str, str]]:
    """The violations of a batch's group_key and group_callback_url."""
    out: list[tuple[str, str]] = []
    if group.callback_url and not group.key:
        out.append(("group_callback_url", "needs a group_key"))
    elif group.callback_url:
        check_url(group.callback_url, "group_callback_url", lambda f, d: out.append((f, d)), limits)
    return check_group_key(group.key, required=False) + out


def require_valid(spec: Spec, *, now_ms: int, limits: Limits) -> None:
    violations = check_spec(spec, now_ms=now_ms, limits=limits)
    if violations:
        raise InvalidArgument(violations)


def _check_labels(labels: dict[str, str], add, limits: Limits) -> None:
    if len(labels) > limits.max_labels:
        add("labels", f"{len(labels)} labels; at most {limits.max_labels}")
        return
    for k, v in labels.items():
        if not 0 < len(k) <= limits.max_label_key or len(v) > limits.max_label_value or ANY_CONTROL.search(k + v):
            add(f"labels[{show(k)}]", f"label keys are 1-{limits.max_label_key} characters, values at most"
                                      f" {limits.max_label_value}, neither with control characters")  # fmt: skip


def _check_codes(codes, fname: str, add, limits: Limits) -> None:
    if len(codes) > limits.max_codes:
        add(fname, f"{len(codes)} codes; at most {limits.max_codes}")
        return
    for code in codes:
        if not 100 <= code <= 599:
            add(fname, f"{code} is not an HTTP status code")


def _check_retry(r: RetryPolicy, add, limits: Limits) -> None:
    if not 1 <= r.max_attempts <= 1000:
        add("retry.max_attempts", "must be between 1 and 1000")
    if not 0 <= r.min_backoff <= DAY:
        add("retry.min_backoff", "must be between 0 and 1 day")
    if not r.min_backoff <= r.max_backoff <= 7 * DAY:
        add("retry.max_backoff", "must be at least min_backoff and at most 7 days")
    if not 1.0 <= r.multiplier <= 10.0:
        add("retry.multiplier", "must be between 1 and 10")
    if not 0 < r.max_retry_duration <= 30 * DAY:
        add("retry.max_retry_duration", "must be more than 0 and at most 30 days")
    _check_codes(r.retry_codes, "retry.retry_codes", add, limits)


# --- the other operations ------------------------------------------------------


def check_id(notify_id: str, fname: str = "id") -> None:
    """A notify id as callers name it: required, 1-64 characters of letters, digits and ._:@+-=."""
    if not notify_id:
        raise InvalidArgument([(fname, "is required")])
    if not _ID.fullmatch(notify_id):
        raise InvalidArgument([(fname, "is not a notify id (1-64 letters, digits and ._:@+-=)")])


def check_trigger(trigger_key: str, delay_s: float, *, limits: Limits) -> None:
    bad = []
    if not trigger_key:
        bad.append(("trigger_key", "is required"))
    elif not _KEY.fullmatch(trigger_key):
        bad.append(("trigger_key", KEY_RULE))
    if not 0 <= delay_s <= limits.max_schedule_ahead_s:
        bad.append(("delay", f"must be 0 to {limits.max_schedule_ahead_s:.0f} s (not negative)"))
    if bad:
        raise InvalidArgument(bad)


def check_filter(f: ListFilter) -> None:
    bad = [
        (name, KEY_RULE)
        for name, value in (("queue", f.queue), ("trigger_key", f.trigger_key), ("ordering_key", f.ordering_key),
                            ("group_key", f.group_key))
        if value and not _KEY.fullmatch(value)
    ]
    if bad:
        raise InvalidArgument(bad)


def check_batch(news: list[Incoming], *, limits: Limits, sizes: list[int]) -> None:
    """A batch's count, and its size (sizes: incoming_size of each)."""
    if not news:
        raise InvalidArgument([("requests", "must hold at least one request")])
    if len(news) > limits.max_batch:
        raise InvalidArgument([("requests", f"{len(news)} requests; at most {limits.max_batch} in one batch")])
    total = sum(sizes)
    if total > limits.max_notify_bytes:
        raise InvalidArgument([("requests", f"the batch takes about {total} bytes; its answer must fit"
                                            f" {limits.max_notify_bytes}: send fewer at once")])  # fmt: skip


def check_queue(cfg: QueueConfig, limits: Limits = Limits()) -> None:
    """A queue's name and limits (SetQueueLimits, PauseQueue, NOTIFY_QUEUES)."""
    bad = []
    if not cfg.name:
        bad.append(("name", "is required"))
    elif not _KEY.fullmatch(cfg.name):
        bad.append(("name", KEY_RULE))
    if not 0 <= cfg.max_concurrent <= limits.max_queue_concurrent:
        bad.append(("max_concurrent", f"must be 0 (unlimited) to {limits.max_queue_concurrent:,}"))
    if not (math.isfinite(cfg.rate) and 0 <= cfg.rate <= limits.max_queue_rate):
        bad.append(("rate", f"must be 0 (unlimited) to {limits.max_queue_rate:,.0f} per second"))
    if not 0 <= cfg.burst <= limits.max_queue_burst:
        bad.append(("burst", f"must be 0 (the rate) to {limits.max_queue_burst:,}"))
    if bad:
        raise InvalidArgument(bad)


def check_hello(dispatcher_id: str, capacity: int) -> str:
    """What is wrong with a dispatcher's hello on the Lease stream (empty when nothing)."""
    if not dispatcher_id or len(dispatcher_id) > 200 or ANY_CONTROL.search(dispatcher_id):
        return "hello.dispatcher_id must be 1-200 characters without control characters"
    if not 0 < capacity <= 1_000_000:
        return "hello.capacity must be 1 to 1,000,000"
    return ""

