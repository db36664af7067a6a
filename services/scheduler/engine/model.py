"""Domain types of the scheduler: plain data, no protobuf, no gRPC."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


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
        return self in (State.SUCCEEDED, State.FAILED, State.CANCELLED)


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    json_body: str = ""
    form: dict[str, str] = field(default_factory=dict)


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
    timeout: float = 30.0
    expire_at_ms: int | None = None
    callback_url: str = ""
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    number: int
    start_ms: int
    end_ms: int
    dispatcher_id: str
    status_code: int
    error: str
    success: bool
    snippet: bytes = b""


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
    attempts: list[AttemptRecord] = field(default_factory=list)
    # The state the store holds while this copy is in memory: becoming due (PENDING) and
    # being leased (DELIVERING) are not written, so the two can differ.
    stored_state: State | None = None

    @property
    def attempts_in_budget(self) -> int:
        return self.attempt_count - self.budget_base


@dataclass(frozen=True, slots=True)
class NewNotify:
    spec: Spec
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class ListFilter:
    state: State | None = None
    queue: str = ""
    trigger_key: str = ""
    ordering_key: str = ""
    label_key: str = ""  # only notifies that carry this label...
    label_value: str | None = None  # ...with this value (None: any value)


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Limits of a named queue; 0 means unlimited. burst 0 means max(1, rate)."""

    name: str
    max_concurrent: int = 0
    rate: float = 0.0  # grants per second
    burst: int = 0
    paused: bool = False
