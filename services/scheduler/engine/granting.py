"""Granting: due notifies go to dispatchers with credit, within their queues' limits.

A grant is a lease (notify, dispatcher, attempt, deadline) put in the
dispatcher's outbox; the lease's deadline sits in the wheel. Granting runs
once per loop turn however many things asked for it (`_pump`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from .memory import Memory
from .model import LIMIT_FIELDS, QUEUE_FIELDS, QueueConfig, State
from .sessions import Grant

log = logging.getLogger(__name__)


class Granting(Memory):
    def _pump(self) -> None:
        if not self._pump_soon:
            self._pump_soon = True
            asyncio.get_running_loop().call_soon(self._grant_ready)

    def _grant_ready(self) -> None:
        self._pump_soon = False
        if not self._accepting:
            return
        sessions = [s for s in self._sessions.values() if s.credit > 0 and not s.closed and not s.stalled]
        now = self._clock.now_ms()
        allowed = lambda q: self._queues.allowed(q, self._leases.in_flight(q), now)  # noqa: E731
        ready, fence, queues, leases, wheel = self._ready, self._fence, self._queues, self._leases, self._wheel
        margin_s = self._settings.lease_margin_s
        while sessions and len(ready):
            n = ready.pop(allowed)
            if n is None:
                self._wake_for_tokens(now)
                break
            part = fence.of(n.id)
            epoch = fence.epoch(part)
            if epoch is None:  # its partition was given up (or may have expired): not ours to deliver
                self._drop(n.id)
                continue
            spec = n.spec
            if spec.expire_at_ms is not None and now > spec.expire_at_ms:
                self._spawn(self._finish_unattempted(n, n.version, "expired: expire_at passed before delivery"))
                continue
            queues.on_grant(spec.queue, now)
            self._turn = (self._turn + 1) % len(sessions)
            s = sessions[self._turn]
            deadline = now + int((spec.timeout + margin_s) * 1000)
            lease = leases.grant(n, s.dispatcher_id, now_ms=now, deadline_ms=deadline)
            self._held.move(n, State.DELIVERING, n.due_ms)
            lease.version, lease.partition, lease.epoch = n.version, part, epoch
            s.credit -= 1
            s.send(Grant(lease))
            wheel.add(deadline, lease.lease_id)  # by id, as memory._schedule_lease does
            if s.credit == 0:
                sessions.remove(s)
        if len(leases):
            self._no_leases.clear()
        self._arm()

    def _wake_for_tokens(self, now: int) -> None:
        """Ready work waits on a rate limit: pump again when the first token is due."""
        wait = self._queues.ms_until_token(self._ready.queue_names(), now)
        if wait is None:
            return
        when = now + wait
        if self._rate_timer is not None:
            if self._rate_at is not None and self._rate_at <= when:
                return
            self._rate_timer.cancel()

        def wake() -> None:
            self._rate_timer = self._rate_at = None
            self._pump()

        self._rate_at = when
        self._rate_timer = self._clock.call_at(when, wake)

    # --- queue limits ---------------------------------------------------------

    async def configure_queues(self, configs: list[QueueConfig]) -> list[str]:
        """Applies limits from configuration (pause state is kept); returns what changed."""
        changes = []
        for cfg in configs:
            old = self._queues.config(cfg.name)
            new = QueueConfig(cfg.name, cfg.max_concurrent, cfg.rate, cfg.burst, old.paused)
            if new != old:
                await self.update_queue(new, LIMIT_FIELDS)
                changes.append(f"queue {cfg.name}: max_concurrent={new.max_concurrent} rate={new.rate:g} burst={new.burst}")
        return changes

    async def update_queue(self, cfg: QueueConfig, fields: Iterable[str] = QUEUE_FIELDS) -> QueueConfig:
        """Persists the named settings of a queue and applies the queue as stored (another
        scheduler may have changed its other settings meanwhile)."""
        self._queues.configure(cfg, self._clock.now_ms())  # checks it first
        stored = await self._store.save_queue(cfg, fields)
        if stored != cfg:
            self._queues.configure(stored, self._clock.now_ms())
        cfg = stored
        log.info("queue %s: %s", cfg.name, "paused" if cfg.paused else
                 f"max_concurrent={cfg.max_concurrent or 'unlimited'} rate={cfg.rate or 'unlimited'}")  # fmt: skip
        self._pump()
        return cfg

    async def refresh_queues(self, share: int) -> None:
        """Several schedulers share the store: takes queue settings another one stored (pause,
        limits) and enforces 1/share of each limit (share: the live schedulers)."""
        now = self._clock.now_ms()
        changed = self._queues.set_share(share, now)
        for cfg in await self._store.load_queues():
            if cfg != self._queues.config(cfg.name):
                self._queues.configure(cfg, now)
                changed = True
        if changed:
            self._pump()

    def queue_config(self, name: str) -> QueueConfig:
        """A queue's settings (the defaults, unlimited, for one never configured)."""
        return self._queues.config(name)
