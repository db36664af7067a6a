"""Domain types of the scheduler: plain data, no protobuf, no gRPC."""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field

from ...common.calls import DEFAULT_TIMEOUT_S, METHODS  # noqa: F401  (METHODS: for validate)


class State(enum.IntEnum):
    """Where a notify is in its life (numbers match notifyagent.v1.State)."""

    SCHEDULED = 1
    WAITING_TRIGGER = 2
    PENDING = 3
    DELIVERING = 4
    RETRY_WAIT = 5
    SUCCEEDED = 6
    FAILED = 7
    CANCELLED = 8

    @property
    def terminal(self) -> bool:
        return self >= State.SUCCEEDED  # SUCCEEDED, FAILED, CANCELLED: the last three


# One empty mapping shared by every spec without headers, form or labels: a held notify
# would otherwise carry three empty dicts (64 bytes each). Specs are frozen and nothing
# mutates their mappings; code that wants its own copy takes dict(...).
EMPTY: dict[str, str] = {}
# The same for a notify's attempts when it carries none: a tuple, so code that would append to
# the shared one fails loudly. The stores return it for a notify read without attempts.
NO_ATTEMPTS: tuple[()] = ()


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=lambda: EMPTY)
    body: bytes = b""
    json_body: str = ""
    form: dict[str, str] = field(default_factory=lambda: EMPTY)
    # limits.request_size's figure, worked out on first use and kept (a Request is frozen and
    # often shared, so most notifies never pay for it): -1 until then.
    size: int = field(default=-1, init=False, repr=False, compare=False)


@functools.lru_cache(maxsize=4096)
def shared(value):
    """The first-seen instance equal to value (frozen, hashable: RetryPolicy, Success), so that
    held notifies with the same policy share one object instead of a copy each."""
    return value


SHARED_REQUEST_BYTES = 4096  # larger calls are not kept for sharing: 4096 of them could pin gigabytes


def plain_request(method: str, url: str, body: bytes, json_body: str) -> Request:
    """A Request without headers or form, shared by every notify that makes the same call
    (Requests are frozen): notifies held in memory then share its url and body as well.
    Only small calls are kept for sharing, so that the cache cannot pin big bodies that
    callers (or hostile input) send once."""
    if len(body) + len(json_body) + len(url) > SHARED_REQUEST_BYTES:
        return Request(method=method, url=url, body=body, json_body=json_body)
    return _shared_plain_request(method, url, body, json_body)


@functools.lru_cache(maxsize=4096)
def _shared_plain_request(method: str, url: str, body: bytes, json_body: str) -> Request:
    return Request(method=method, url=url, body=body, json_body=json_body)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff min_backoff * multiplier**(n-1), capped at max_backoff, with jitter."""

    max_attempts: int = 20
    min_backoff: float = 5.0
    max_backoff: float = 7200.0
    multiplier: float = 2.0
    max_retry_duration: float = 86400.0
    retry_codes: tuple[int, ...] = ()  # empty: 408, 429 and every 5xx


@dataclass(frozen=True, slots=True)
class Success:
    status_codes: tuple[int, ...] = ()  # empty: any 2xx
    body_contains: str = ""
    mismatch_final: bool = False  # a success-status answer without body_contains fails for good


@dataclass(frozen=True, slots=True)
class Spec:
    """What a caller asks for; fixed once created (until UpdateNotify)."""

    request: Request
    deliver_at_ms: int | None = None
    trigger_key: str = ""
    ordering_key: str = ""
    queue: str = "default"
    retry: RetryPolicy = RetryPolicy()
    success: Success = Success()
    fire_and_forget: bool = False
    timeout: float = DEFAULT_TIMEOUT_S
    expire_at_ms: int | None = None
    callback_url: str = ""
    labels: dict[str, str] = field(default_factory=lambda: EMPTY)
    group_key: str = ""
    created_by: str = ""  # the name of the token that created it ('' without auth)


@dataclass(slots=True)  # not frozen: one is made per result, and frozen construction costs 4x; nothing changes one
class AttemptRecord:
    number: int
    start_ms: int
    end_ms: int
    dispatcher_id: str
    status_code: int
    error: str
    success: bool
    snippet: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)  # response headers, capped by the dispatcher


@dataclass(slots=True)
class Notification:
    """A notify and its delivery state. Mutable: the engine owns the live copies."""

    id: str
    spec: Spec
    state: State
    create_ms: int
    request_id: str = ""
    due_ms: int | None = None
    complete_ms: int | None = None
    attempt_count: int = 0
    budget_base: int = 0  # attempts made before the last RetryNotify
    first_attempt_ms: int | None = None
    # The stores fill it in for reads that ask for attempts. Without any it is the one shared
    # NO_ATTEMPTS (an empty list per held notify would cost 56 bytes), which cannot be appended to.
    attempts: list[AttemptRecord] | tuple[()] = field(default_factory=lambda: NO_ATTEMPTS)
    # Why the stored row could not be read back (empty when it could): such a notify is
    # shown as it is, never delivered, and never breaks a read.
    unreadable: str = ""
    # Given by the engine on every change while the notify is in memory: what refers to
    # it (timer and ready entries, leases, commits in flight) compares it to see it is stale.
    version: int = 0
    # The version it was put in the timer wheel at: the notify is its own wheel entry (no tuple
    # per held notify), which is stale once the two differ.
    timer_version: int = -1

    @property
    def attempts_in_budget(self) -> int:
        return self.attempt_count - self.budget_base


@dataclass(frozen=True, slots=True)
class NewNotify:
    spec: Spec
    request_id: str = ""
    schedule: str = ""  # which schedule the caller set: deliver_at, delay, trigger_key or none
    delay_s: float | None = None  # the delay as given (spec.deliver_at_ms is now + delay)


@dataclass(frozen=True, slots=True)
class ListFilter:
    state: State | None = None
    queue: str = ""
    trigger_key: str = ""
    ordering_key: str = ""
    group_key: str = ""
    label_key: str = ""  # only notifies that carry this label...
    label_value: str | None = None  # ...with this value (None: any value)


@dataclass(frozen=True, slots=True)
class NewGroup:
    """A fan-out group as a batch names it: the key stamped on its items, and its callback."""

    key: str
    callback_url: str = ""


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """A fan-out group as the store holds it: its members by state, and its callback."""

    key: str
    counts: dict[State, int]
    last_end_ms: int | None = None  # the latest complete time among members
    callback_url: str = ""
    callback_ms: int | None = None  # when the group callback was committed
    callback_id: str = ""  # the notify that carries it

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> bool:
        """Every member has ended (a group without members has not)."""
        return self.total > 0 and all(s.terminal for s in self.counts)

    @property
    def done_ms(self) -> int | None:
        return self.last_end_ms if self.done else None


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Limits of a named queue; 0 means unlimited. burst 0 means max(1, rate)."""

    name: str
    max_concurrent: int = 0
    rate: float = 0.0  # grants per second
    burst: int = 0
    paused: bool = False


QUEUE_FIELDS = ("max_concurrent", "rate", "burst", "paused")  # a queue's settings, each stored on its own
LIMIT_FIELDS = QUEUE_FIELDS[:3]  # what NOTIFY_QUEUES sets (the pause is the operators')
