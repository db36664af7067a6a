"""The one validation layer: every bound on what callers send, as field violations.

Each operation of the engine checks its input here before it touches memory or
the store; the transport only converts (api/convert.py). Every string, map,
time and size has a bound (Limits, documented in the README's bounds table),
so nothing that passes can overflow the arithmetic, the proto timestamps or
the store, and nothing that fails is stored.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from urllib.parse import urlsplit

from .errors import InvalidArgument
from .limits import DAY, Limits, notify_size, show  # noqa: F401 - Limits and notify_size are part of this layer
from .model import METHODS, ListFilter, NewGroup, NewNotify, QueueConfig, Spec

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # tab is allowed in values
_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RESERVED_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "notify-id", "notify-attempt"}
_KEY = re.compile(r"^[A-Za-z0-9._:/@+\-=]{1,200}$")
_ID = re.compile(r"^[A-Za-z0-9._:@+\-=]{1,64}$")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_JSON_NESTING = re.compile(r"[\[\]{}]")
KEY_RULE = "must be 1-200 characters of letters, digits and ._:/@+-="


# --- notifies ----------------------------------------------------------------


def check_new(new: NewNotify, *, now_ms: int, limits: Limits, prefix: str = "notify") -> list[tuple[str, str]]:
    """Violations of a notify to create (empty when it is valid)."""
    out: list[tuple[str, str]] = []
    rid = new.request_id
    if len(rid) > 256 or _ANY_CONTROL.search(rid):
        out.append((prefix.replace("notify", "request_id"), "must be at most 256 characters without control characters"))
    out += check_schedule_input(new, limits=limits, prefix=prefix)
    out += check_spec(new.spec, now_ms=now_ms, limits=limits, prefix=prefix)
    return out


def check_schedule_input(new: NewNotify, *, limits: Limits, prefix: str) -> list[tuple[str, str]]:
    """What only the wire form tells: a delay given as such, a trigger key set but empty."""
    out = []
    if new.delay_s is not None and not 0 <= new.delay_s <= limits.max_schedule_ahead_s:
        out.append((f"{prefix}.delay", f"must be 0 to {limits.max_schedule_ahead_s:.0f} s (not negative)"))
    if new.schedule == "trigger_key" and not new.spec.trigger_key:
        out.append((f"{prefix}.trigger_key", "must not be empty when set"))
    return out


def check_spec(spec: Spec, *, now_ms: int, limits: Limits, prefix: str = "notify") -> list[tuple[str, str]]:
    """Returns the violations of spec (empty when it is valid)."""
    out: list[tuple[str, str]] = []
    add = lambda f, d: out.append((f"{prefix}.{f}", d))  # noqa: E731
    _check_request(spec, add, limits)
    if spec.deliver_at_ms is not None:
        if spec.deliver_at_ms < now_ms - limits.max_schedule_past_s * 1000:
            add("schedule", f"deliver_at is more than {limits.max_schedule_past_s:.0f} s in the past")
        if spec.deliver_at_ms > now_ms + limits.max_schedule_ahead_s * 1000:
            add("schedule", f"schedule is more than {limits.max_schedule_ahead_s:.0f} s ahead (the horizon limit)")
    for fname, key in (("trigger_key", spec.trigger_key), ("ordering_key", spec.ordering_key), ("queue", spec.queue),
                       ("group_key", spec.group_key)):  # fmt: skip
        if key and not _KEY.fullmatch(key):  # fullmatch: `$` lets a trailing newline through
            add(fname, KEY_RULE)
    if not 0 < spec.timeout <= limits.max_timeout_s:
        add("timeout", f"must be more than 0 and at most {limits.max_timeout_s:.0f} s")
    _check_retry(spec, add, limits)
    _check_codes(spec.success.status_codes, "success.status_codes", add, limits)
    if len(spec.success.body_contains) > limits.max_body_contains:
        add("success.body_contains", f"is longer than {limits.max_body_contains} characters")
    if spec.expire_at_ms is not None:
        if spec.expire_at_ms <= now_ms:
            add("expire_at", "is already in the past")
        elif spec.expire_at_ms > now_ms + limits.max_expire_ahead_s * 1000:
            add("expire_at", f"is more than {limits.max_expire_ahead_s:.0f} s ahead")
    if spec.callback_url:
        _check_url(spec.callback_url, "callback_url", add, limits)
    _check_labels(spec.labels, add, limits)
    if not out and notify_size(spec) > limits.max_notify_bytes:
        add("request", f"the notify takes about {notify_size(spec)} bytes; one grant message holds {limits.max_notify_bytes}")
    return out


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
        _check_url(group.callback_url, "group_callback_url", lambda f, d: out.append((f, d)), limits)
    return check_group_key(group.key, required=False) + out


def require_valid(spec: Spec, *, now_ms: int, limits: Limits) -> None:
    violations = check_spec(spec, now_ms=now_ms, limits=limits)
    if violations:
        raise InvalidArgument(violations)


def _check_request(spec: Spec, add, limits: Limits) -> None:
    req = spec.request
    if req.method not in METHODS:
        add("request.method", f"unknown method {show(req.method)}; use one of {', '.join(METHODS)}")
    _check_url(req.url, "request.url", add, limits)
    if len(req.headers) > limits.max_headers:
        add("request.headers", f"{len(req.headers)} headers; at most {limits.max_headers}")
    else:
        for name, value in req.headers.items():
            field = f"request.headers[{show(name)}]"
            if not _TOKEN.fullmatch(name):
                add(field, "header name must be an HTTP token (no spaces or control characters)")
            elif name.lower() in _RESERVED_HEADERS:
                add(field, "header is set by NotifyAgent and cannot be given")
            if _CONTROL.search(value):
                add(field, "header value contains control characters")
    header_bytes = sum(len(k) + len(v) for k, v in req.headers.items())
    if header_bytes > limits.max_header_bytes:
        add("request.headers", f"headers take {header_bytes} bytes; at most {limits.max_header_bytes}")
    if len(req.form) > limits.max_form_fields:
        add("request.form_body", f"{len(req.form)} fields; at most {limits.max_form_fields}")
    bodies = sum(1 for b in (req.body, req.json_body, req.form) if b)
    if bodies > 1:
        add("request.body", "set only one of body, json_body and form_body")
    size = len(req.body) + len(req.json_body.encode("utf-8", "replace")) + sum(len(k) + len(v) for k, v in req.form.items())
    if size > limits.max_body_bytes:
        add("request.body", f"body is {size} bytes; the limit is {limits.max_body_bytes}")
    elif req.json_body:
        problem = json_problem(req.json_body, limits.max_json_depth)
        if problem:
            add("request.json_body", problem)


def json_problem(text: str, max_depth: int) -> str:
    """Why text is not JSON NotifyAgent takes (empty when it is fine); never recurses deeper than max_depth."""
    depth = deepest = 0
    for m in _JSON_NESTING.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if m.group() in "[{" else -1
        deepest = max(deepest, depth)
    if deepest > max_depth:
        return f"nests deeper than {max_depth} levels"
    try:
        json.loads(text)
    except (ValueError, RecursionError) as e:
        return f"not valid JSON: {str(e)[:100]}"
    return ""


def _check_url(url: str, fname: str, add, limits: Limits) -> None:
    if not url:
        add(fname, "is required")
        return
    if len(url) > limits.max_url_length:
        add(fname, f"is longer than {limits.max_url_length} characters")
        return
    if _ANY_CONTROL.search(url) or " " in url:
        add(fname, "contains spaces or control characters")
        return
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as e:
        add(fname, f"cannot be parsed: {str(e)[:100]}")
        return
    if parts.scheme not in ("http", "https"):
        add(fname, f"scheme must be http or https, not {show(parts.scheme) if parts.scheme else 'missing'}")
    elif not host:
        add(fname, "has no host")
    elif port == 0:
        add(fname, "port 0 is not a valid target")


def _check_labels(labels: dict[str, str], add, limits: Limits) -> None:
    if len(labels) > limits.max_labels:
        add("labels", f"{len(labels)} labels; at most {limits.max_labels}")
        return
    for k, v in labels.items():
        if not 0 < len(k) <= limits.max_label_key or len(v) > limits.max_label_value or _ANY_CONTROL.search(k + v):
            add(f"labels[{show(k)}]", f"label keys are 1-{limits.max_label_key} characters, values at most"
                                      f" {limits.max_label_value}, neither with control characters")  # fmt: skip


def _check_codes(codes, fname: str, add, limits: Limits) -> None:
    if len(codes) > limits.max_codes:
        add(fname, f"{len(codes)} codes; at most {limits.max_codes}")
        return
    for code in codes:
        if not 100 <= code <= 599:
            add(fname, f"{code} is not an HTTP status code")


def _check_retry(spec: Spec, add, limits: Limits) -> None:
    r = spec.retry
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


def check_batch(news: list[NewNotify], *, limits: Limits) -> None:
    if not news:
        raise InvalidArgument([("requests", "must hold at least one request")])
    if len(news) > limits.max_batch:
        raise InvalidArgument([("requests", f"{len(news)} requests; at most {limits.max_batch} in one batch")])
    total = sum(notify_size(n.spec) for n in news)
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
    if not dispatcher_id or len(dispatcher_id) > 200 or _ANY_CONTROL.search(dispatcher_id):
        return "hello.dispatcher_id must be 1-200 characters without control characters"
    if not 0 < capacity <= 1_000_000:
        return "hello.capacity must be 1 to 1,000,000"
    return ""

