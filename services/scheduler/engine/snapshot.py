"""What the engine shows to admin, metrics and the runner: a frozen copy, taken at once."""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import QueueConfig, State


@dataclass(frozen=True, slots=True)
class DispatcherView:
    dispatcher_id: str
    version: str
    capacity: int
    credit: int
    leases: int
    connect_ms: int
    draining: bool = False  # takes no more grants


@dataclass(frozen=True, slots=True)
class HeldView:
    """A notify as memory holds it."""

    id: str
    ordering_key: str
    state: State
    due_ms: int | None
    version: int
    leased: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    start_ms: int
    accepting: bool
    sent_ok: int
    sent_failed: int
    held: int  # notifies in memory
    ready: int  # due, waiting for a dispatcher
    wheel: int  # entries in the timer wheel (notifies and lease deadlines)
    leases: int
    waiting: int = 0  # notifies the wheel holds for a future time (not lease deadlines or stale entries)
    shutting_down: bool = False  # drain() began
    dispatchers: tuple[DispatcherView, ...] = ()
    queue_configs: dict[str, QueueConfig] = field(default_factory=dict)  # configured queues
    in_flight: dict[str, int] = field(default_factory=dict)  # leases by queue
    ready_queues: tuple[str, ...] = ()  # queues with due notifies waiting

    def queue_config(self, name: str) -> QueueConfig:
        return self.queue_configs.get(name) or QueueConfig(name)
