"""Checks a Spec against the rules of the contract; every problem becomes a field violation."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import InvalidArgument
from .model import METHODS, NewGroup, Spec

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_RESERVED_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "notify-id", "notify-attempt"}
_KEY = re.compile(r"^[A-Za-z0-9._:/@+\-=]{1,200}$")
KEY_RULE = "must be 1-200 characters of letters, digits and ._:/@+-="


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 1 << 20
    max_url_length: int = 8192
    max_schedule_ahead_s: float = 366 * 86400
    max_schedule_past_s: float = 86400
    max_timeout_s: float = 600.0


def check_spec(spec: Spec, *, now_ms: int, limits: Limits, prefix: str = "notify") -> list[tuple[str, str]]:
    """Returns the violations of spec (empty when it is valid)."""
    out: list[tuple[str, str]] = []
    add = lambda f, d: out.append((f"{prefix}.{f}", d))  # noqa: E731
    req = spec.request
    if req.method not in METHODS:
        add("request.method", f"unknown method {req.method!r}; use one of {', '.join(METHODS)}")
    _check_url(req.url, "request.url", add, limits)
    for name, value in req.headers.items():
        if not _TOKEN.match(name):
            add(f"request.headers[{name!r}]", "header name must be an HTTP token (no spaces or control characters)")
        elif name.lower() in _RESERVED_HEADERS:
            add(f"request.headers[{name!r}]", "header is set by NotifyAgent and cannot be given")
        if _BAD_VALUE.search(value):
            add(f"request.headers[{name!r}]", "header value contains control characters")
    bodies = sum(1 for b in (req.body, req.json_body, req.form) if b)
    if bodies > 1:
        add("request.body", "set only one of body, json_body and form_body")
    size = len(req.body) + len(req.json_body.encode()) + sum(len(k) + len(v) for k, v in req.form.items())
    if size > limits.max_body_bytes:
        add("request.body", f"body is {size} bytes; the limit is {limits.max_body_bytes}")
    if req.json_body:
        try:
            json.loads(req.json_body)
        except ValueError as e:
            add("request.json_body", f"not valid JSON: {e}")
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
    _check_retry(spec, add)
    for code in spec.success.status_codes:
        if not 100 <= code <= 599:
            add("success.status_codes", f"{code} is not an HTTP status code")
    if spec.expire_at_ms is not None and spec.expire_at_ms <= now_ms:
        add("expire_at", "is already in the past")
    if spec.callback_url:
        _check_url(spec.callback_url, "callback_url", add, limits)
    for k, v in spec.labels.items():
        if not k or len(k) > 63 or len(v) > 256:
            add(f"labels[{k!r}]", "label keys are 1-63 characters, values at most 256")
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


def _check_url(url: str, fname: str, add, limits: Limits) -> None:
    if not url:
        add(fname, "is required")
        return
    if len(url) > limits.max_url_length:
        add(fname, f"is longer than {limits.max_url_length} characters")
        return
    if _BAD_VALUE.search(url) or " " in url:
        add(fname, "contains spaces or control characters")
        return
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        add(fname, f"cannot be parsed: {e}")
        return
    if parts.scheme not in ("http", "https"):
        add(fname, f"scheme must be http or https, not {parts.scheme or 'missing'!r}")
    elif not parts.hostname:
        add(fname, "has no host")
    elif port == 0:
        add(fname, "port 0 is not a valid target")


def _check_retry(spec: Spec, add) -> None:
    r = spec.retry
    if not 1 <= r.max_attempts <= 1000:
        add("retry.max_attempts", "must be between 1 and 1000")
    if not 0 <= r.min_backoff <= 86400:
        add("retry.min_backoff", "must be between 0 and 1 day")
    if not r.min_backoff <= r.max_backoff <= 7 * 86400:
        add("retry.max_backoff", "must be at least min_backoff and at most 7 days")
    if not 1.0 <= r.multiplier <= 10.0:
        add("retry.multiplier", "must be between 1 and 10")
    if not 0 < r.max_retry_duration <= 30 * 86400:
        add("retry.max_retry_duration", "must be more than 0 and at most 30 days")
    for code in r.retry_codes:
        if not 100 <= code <= 599:
            add("retry.retry_codes", f"{code} is not an HTTP status code")
