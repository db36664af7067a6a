"""The dispatcher's Prometheus series: attempts by result, call latency, per-target counts.

`MeteredSender` wraps the sender the lease client uses and records every call
it makes; a call held back (deferred: its target is backing off) is not an
attempt and is counted on its own. Per-target series are labelled with the
target's `host:port`; after MAX_TARGETS distinct targets the rest share the
label `other`, so a dispatcher calling many hosts cannot grow /metrics
without bound.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from .call import CallOutcome, ErrorKind, OutgoingCall, Sender
from .hosts import host_key

MAX_TARGETS = 100
OTHER = "other"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 600)


def result_of(outcome: CallOutcome) -> str:
    """ok, http_error (an answer that is not a success), or why there was no answer."""
    if outcome.success:
        return "ok"
    if outcome.status_code:
        return "http_error"
    return outcome.error_kind.value  # connect, timeout, blocked, protocol, cancelled


class DispatcherMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter("notifyagent_attempts_total", "HTTP attempts made, by result", ["result"], registry=registry)
        self.latency = Histogram("notifyagent_call_latency_seconds", "Duration of an HTTP attempt",
                                 buckets=LATENCY_BUCKETS, registry=registry)  # fmt: skip
        self.deferred = Counter("notifyagent_deferred_total", "Calls held back because their target was backing off or busy",
                                registry=registry)  # fmt: skip
        self.target_attempts = Counter("notifyagent_target_attempts_total",
                                       f"HTTP attempts per target host:port (the first {MAX_TARGETS}; then '{OTHER}')",
                                       ["target", "result"], registry=registry)  # fmt: skip
        self._targets: set[str] = set()
        self._children: dict[tuple, tuple] = {}  # (target, result) -> the two counters to increment


    def target_label(self, url: str) -> str:
        key = host_key(url) or OTHER
        if key in self._targets:
            return key
        if len(self._targets) < MAX_TARGETS:
            self._targets.add(key)
            return key
        return OTHER

    def record(self, call: OutgoingCall, outcome: CallOutcome) -> None:
        if outcome.error_kind is ErrorKind.DEFERRED:
            self.deferred.inc()
            return
        result = result_of(outcome)
        key = (host_key(call.url) or OTHER, result)
        counters = self._children.get(key)
        if counters is None:  # labels() looks its child up under a lock: once per target and result
            counters = (self.attempts.labels(result), self.target_attempts.labels(self.target_label(call.url), result))
            if len(self._children) < 4 * MAX_TARGETS:
                self._children[key] = counters
        counters[0].inc()
        counters[1].inc()
        self.latency.observe(outcome.latency)


class MeteredSender:
    """A Sender that records what the sender it wraps did; same `send(call) -> CallOutcome`."""

    def __init__(self, sender: Sender, metrics: DispatcherMetrics) -> None:
        self._sender = sender
        self._metrics = metrics

    async def send(self, call: OutgoingCall) -> CallOutcome:
        outcome = await self._sender.send(call)
        self._metrics.record(call, outcome)
        return outcome
