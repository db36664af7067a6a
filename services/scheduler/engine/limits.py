"""The bounds of the validation layer (validate.py) and the sizes it reasons about.

Every string, map, time and size a caller sends has a bound here; the README's
bounds table lists them."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .model import Request, Spec

DAY = 86400
SHOW = 40  # characters of a bad value a violation may echo


@dataclass(frozen=True, slots=True)
class Limits:
    """Every bound the layer enforces. The README's bounds table lists them."""

    max_body_bytes: int = 1 << 20
    max_url_length: int = 8192
    max_headers: int = 100
    max_header_bytes: int = 64 << 10  # names and values together
    max_labels: int = 64
    max_label_key: int = 63
    max_label_value: int = 256
    max_form_fields: int = 1000
    max_json_depth: int = 64
    max_body_contains: int = 1024
    max_codes: int = 100  # success.status_codes and retry.retry_codes
    max_schedule_ahead_s: float = 366 * DAY  # deliver_at, delay, Trigger's delay
    max_schedule_past_s: float = DAY
    max_expire_ahead_s: float = 400 * DAY
    max_timeout_s: float = 600.0
    max_batch: int = 1000  # BatchCreateNotify requests
    max_message_bytes: int = 16 << 20  # gRPC messages both ways; a notify must fit in one grant
    max_queue_concurrent: int = 1_000_000
    max_queue_rate: float = 1_000_000.0
    max_queue_burst: int = 1_000_000

    @property
    def max_notify_bytes(self) -> int:
        """The largest notify (see notify_size) that still fits one grant message with room to spare."""
        return self.max_message_bytes - (64 << 10)


def show(value: str) -> str:
    """A bad value as a violation may quote it: repr, cut to a few dozen characters."""
    text = repr(value)
    return text if len(text) <= SHOW else text[: SHOW - 4] + "...'"


def request_size(r: Request) -> int:
    """About the bytes a request takes on the wire; worked out once per Request (frozen,
    often shared) and kept on it."""
    size = r.size
    if size < 0:
        size = (
            len(r.url) + len(r.body) + len(r.json_body.encode("utf-8", "replace"))
            + sum(len(k) + len(v) + 8 for k, v in r.headers.items())
            + sum(len(k) + len(v) + 8 for k, v in r.form.items())
        )  # fmt: skip
        object.__setattr__(r, "size", size)  # a cache of a pure function of the frozen fields
    return size


def notify_size(spec: Spec) -> int:
    """About the bytes a notify takes on the wire (what a grant message must hold)."""
    size = request_size(spec.request) + len(spec.callback_url) + len(spec.success.body_contains) + 1024
    if spec.labels:
        size += sum(len(k) + len(v) + 8 for k, v in spec.labels.items())
    return size


def bound_result(r):
    """A dispatcher's result (engine.results.ResultIn) cut to what is stored: error 1,024
    characters, snippet 4 KiB, 32 headers of 256 characters, Retry-After at most 7 days.
    One within every bound (most are) comes back as it is."""
    o, headers = r.outcome, r.headers
    if len(o.error) > 1024 or "\x00" in o.error or not (o.retry_after_s is None or 0.0 <= o.retry_after_s <= 7.0 * DAY):
        retry_after = None if o.retry_after_s is None else min(max(o.retry_after_s, 0.0), 7.0 * DAY)
        o = replace(o, error=o.error[:1024].replace("\x00", ""), retry_after_s=retry_after)
    elif len(r.snippet) <= 4096 and (not headers or len(headers) <= 32 and max(map(len, [*headers, *headers.values()])) <= 256):
        return r  # nothing to copy
    headers = headers and {k[:256]: v[:256] for k, v in list(headers.items())[:32]}
    return replace(r, outcome=o, snippet=r.snippet[:4096], headers=headers)
