"""The scheduler's Prometheus series, fed by the engine's observers and read at scrape time.

Counters and histograms follow the engine's facts (created, attempted,
finished); gauges by state and queue are read from the store's counts right
before a scrape. The old gauges (`notifyagent_sent_ok` and friends) stay for
dashboards built on them; new dashboards use the counters.
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import accumulate

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from ..common.web import add_collector, gauge
from .engine.core import Engine
from .engine.model import AttemptRecord, Notification, State

# Seconds from a notify's due time to its attempt's start, from "on time" to a day late.
LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400)


class SchedulerMetrics:
    def __init__(self, engine: Engine, registry: CollectorRegistry) -> None:
        self._engine = engine
        self.created = Counter("notifyagent_notifies_created_total", "Notifies created through the API", registry=registry)
        self.delivered = Counter("notifyagent_delivered_total", "Notifies that ended, by outcome (succeeded, failed)",
                                 ["outcome"], registry=registry)  # fmt: skip
        # The lateness histogram is kept here and exposed at scrape time: a per-bucket count and a
        # sum cost ~0.3 us per result where prometheus_client's Histogram.observe (two locked
        # increments and a scan of the bounds) costs ~0.9 us. The same series as a Histogram.
        self._late_counts = [0] * (len(LATENESS_BUCKETS) + 1)  # the last one is +Inf
        self._late_sum = 0.0
        self.by_state = Gauge("notifyagent_notifies", "Notifies by queue and state", ["queue", "state"], registry=registry)
        # present at 0 from the start; the children are kept (labels() per notify costs more than inc())
        self._delivered = {state: self.delivered.labels(state.name.lower()) for state in (State.SUCCEEDED, State.FAILED)}
        engine.observers.created.append(self._created)
        engine.observers.attempted.append(self._attempted)
        engine.observers.finished.append(self._finished)
        add_collector(registry, self._collect)

    def _created(self, count: int) -> None:
        self.created.inc(count)

    def _attempted(self, n: Notification, attempt: AttemptRecord, due_ms: int) -> None:
        late = max(0, attempt.start_ms - due_ms) / 1000
        self._late_counts[bisect_left(LATENESS_BUCKETS, late)] += 1  # the first bound >= late, as observe()
        self._late_sum += late

    def _lateness(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily("notifyagent_lateness_seconds", "From a notify's due time to its attempt's start")
        bounds = [str(float(b)) for b in LATENESS_BUCKETS] + ["+Inf"]
        family.add_metric([], list(zip(bounds, accumulate(self._late_counts))), self._late_sum)
        return family

    def _finished(self, n: Notification, last: AttemptRecord | None, reason: str) -> None:
        child = self._delivered.get(n.state)
        if child is not None:
            child.inc()

    async def refresh(self) -> None:
        """Counts by queue and state, read from the store (with what only memory knows)."""
        counts = await self._engine.counts()
        self.by_state.clear()
        for (queue, state), count in counts.items():
            self.by_state.labels(queue, state.name.lower()).set(count)

    def _collect(self):
        yield self._lateness()
        snap = self._engine.snapshot()
        yield gauge("notifyagent_sent_ok", "Notifies delivered since start (old name; see notifyagent_delivered_total)", snap.sent_ok)
        yield gauge("notifyagent_sent_failed", "Notifies failed for good since start (old name; see notifyagent_delivered_total)", snap.sent_failed)
        yield gauge("notifyagent_leases", "Calls leased to dispatchers now", snap.leases)
        yield gauge("notifyagent_ready", "Due notifies waiting for a dispatcher", snap.ready)
        yield gauge("notifyagent_wheel", "Notifies the timer wheel holds for a future time", snap.waiting)
        yield gauge("notifyagent_dispatchers", "Connected dispatchers", len(snap.dispatchers))
        yield gauge("notifyagent_shutting_down", "1 while the scheduler is stopping", int(snap.shutting_down))
        in_flight = GaugeMetricFamily("notifyagent_queue_in_flight", "Deliveries in flight per queue", labels=["queue"])
        paused = GaugeMetricFamily("notifyagent_queue_paused", "1 if the queue is paused", labels=["queue"])
        for cfg in snap.queue_configs.values():
            paused.add_metric([cfg.name], int(cfg.paused))
        for name in sorted(set(snap.queue_configs) | set(snap.ready_queues) | set(snap.in_flight)):
            in_flight.add_metric([name], snap.in_flight.get(name, 0))
        leases = GaugeMetricFamily("notifyagent_dispatcher_leases", "Leases held per connected dispatcher", labels=["dispatcher"])
        draining = GaugeMetricFamily("notifyagent_dispatcher_draining", "1 if the dispatcher takes no more work", labels=["dispatcher"])
        for d in snap.dispatchers:
            leases.add_metric([d.dispatcher_id], d.leases)
            draining.add_metric([d.dispatcher_id], int(d.draining))
        yield from (in_flight, paused, leases, draining)
