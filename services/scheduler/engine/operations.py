"""What callers may do with notifies: create, read, cancel, retry, update, trigger.

Each operation checks the request, changes the store, then tells the engine
what memory must follow; the engine owns what is due, ready and in flight."""

from __future__ import annotations

import logging
from dataclasses import replace

from .core import Engine
from .errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from .model import ListFilter, NewNotify, Notification, Spec, State
from .outcomes import UNFINISHED, UPDATABLE, UPDATABLE_STATES, new_notification
from .validate import check_batch, check_filter, check_id, check_new, check_schedule_input, check_trigger, require_valid

log = logging.getLogger(__name__)


class Operations:
    def __init__(self, engine: Engine) -> None:
        self._e = engine

    @property
    def clock(self):
        return self._e.clock

    @property
    def limits(self):
        return self._e.settings.limits

    async def create(self, news: list[NewNotify], *, batch: bool = False) -> list[Notification]:
        if not self._e.accepting:
            raise Unavailable("scheduler is not accepting work (starting or shutting down)")
        now = self._e.clock.now_ms()
        limits = self._e.settings.limits
        violations = []
        for i, new in enumerate(news):
            prefix = "notify" if not batch else f"requests[{i}].notify"
            violations += check_new(new, now_ms=now, limits=limits, prefix=prefix)
        if violations:
            raise InvalidArgument(violations)
        if batch:
            check_batch(news, limits=limits)
        items = [new_notification(new, now, self._e.ids) for new in news]
        stored = await self._e.store.insert(items)
        for mine, got in zip(items, stored):
            if got is mine:
                log.debug("notify %s created: %s %s, due %s", got.id, got.spec.request.method, got.spec.request.url, got.due_ms)
                self._e.admit(got)
        return stored

    async def get(self, notify_id: str) -> Notification:
        check_id(notify_id)
        n = await self._e.store.get(notify_id)
        if n is None:
            raise NotFound(f"notify {notify_id!r} not found")
        return self._overlay(n)

    async def list(self, f: ListFilter, *, after_id: str, limit: int) -> list[Notification]:
        check_filter(f)
        if after_id:
            check_id(after_id, "page_token")
        return [self._overlay(n) for n in await self._e.store.list(f, after_id=after_id, limit=limit)]

    def _overlay(self, n: Notification) -> Notification:
        """The stored copy with the in-memory state (DELIVERING lives only in memory)."""
        mine = self._e.live.get(n.id)
        if mine is not None and not n.state.terminal and mine.state in (State.PENDING, State.DELIVERING):
            n.state = mine.state  # due, or leased: known only here; other changes show once committed
        return n

    async def cancel(self, notify_id: str) -> Notification:
        check_id(notify_id)
        now = self._e.clock.now_ms()
        mine = self._e.live.get(notify_id)
        if mine is not None:
            if mine.state.terminal:  # its final result is being committed
                raise FailedPrecondition(f"notify {notify_id} is already {mine.state.name}; only unfinished notifies can be cancelled")
            self._e.forget(notify_id, mine.spec.ordering_key, revoke=True)  # before any await: no grant or result slips in
        changed, cur = await self._e.store.transition(
            notify_id, allowed=UNFINISHED, state=State.CANCELLED, due_ms=None, complete_ms=now
        )
        if cur is None:
            raise NotFound(f"notify {notify_id!r} not found")
        if not changed:
            raise FailedPrecondition(f"notify {notify_id} is already {cur.state.name}; only unfinished notifies can be cancelled")
        self._e.forget(notify_id, cur.spec.ordering_key, revoke=True)
        log.info("notify %s cancelled", notify_id)
        return cur

    async def retry(self, notify_id: str) -> Notification:
        check_id(notify_id)
        now = self._e.clock.now_ms()
        changed, cur = await self._e.store.transition(
            notify_id, allowed=(State.FAILED, State.CANCELLED), state=State.PENDING, due_ms=now,
            complete_ms=None, reset_budget=True,
        )  # fmt: skip
        if cur is None:
            raise NotFound(f"notify {notify_id!r} not found")
        if not changed:
            raise FailedPrecondition(f"notify {notify_id} is {cur.state.name}; only FAILED or CANCELLED ones can be retried")
        log.info("notify %s sent again by RetryNotify", notify_id)
        self._e.admit(cur)
        return cur

    async def update(self, notify_id: str, paths: set[str], given: NewNotify | Spec) -> Notification:
        """Takes the fields named in paths from the given notify; it must not be leased or finished."""
        check_id(notify_id, "notify.id")
        given = NewNotify(given) if isinstance(given, Spec) else given
        candidate = given.spec
        unknown = paths - UPDATABLE.keys()
        if not paths or unknown:
            raise InvalidArgument([("update_mask", f"name one or more of {', '.join(sorted(UPDATABLE))}"
                                    + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else ""))])  # fmt: skip
        if self._e.leases.for_notify(notify_id) is not None:
            raise FailedPrecondition(f"notify {notify_id} is being delivered; update it after this attempt")
        current = await self._e.store.get(notify_id)
        if current is None:
            raise NotFound(f"notify {notify_id!r} not found")
        if "schedule" in paths:
            bad = check_schedule_input(given, limits=self._e.settings.limits, prefix="notify")
            if bad:
                raise InvalidArgument(bad)
        changes = {f: getattr(candidate, f) for p in paths for f in UPDATABLE[p]}
        spec = replace(current.spec, **changes)
        now = self._e.clock.now_ms()
        require_valid(spec, now_ms=now, limits=self._e.settings.limits)
        state, due = current.state, current.due_ms
        if "schedule" in paths:
            fresh = new_notification(NewNotify(spec), now, self._e.ids)
            state, due = fresh.state, fresh.due_ms
        mine = self._e.live.pop(notify_id, None)  # its wheel and ready entries go stale
        if mine is not None and self._e.leases.for_notify(notify_id) is not None:
            self._e.live[notify_id] = mine
            raise FailedPrecondition(f"notify {notify_id} is being delivered; update it after this attempt")
        changed, cur = await self._e.store.update(notify_id, allowed=UPDATABLE_STATES, spec=spec, state=state, due_ms=due)
        if cur is None:
            raise NotFound(f"notify {notify_id!r} not found")
        if not changed:
            if mine is not None and cur.state.terminal:
                self._e.forget(notify_id, cur.spec.ordering_key, revoke=False)  # its own commit no longer finds it live
            elif mine is not None:
                self._e.admit(mine)
            raise FailedPrecondition(f"notify {notify_id} is {cur.state.name}; only unfinished ones can be updated")
        log.info("notify %s updated: %s", notify_id, ", ".join(sorted(paths)))
        stale = self._e.live.get(notify_id)  # the loader may have read the old row meanwhile
        if stale is not None and self._e.leases.for_notify(notify_id) is None:
            del self._e.live[notify_id]
        self._e.admit(cur)
        return cur

    async def trigger(self, trigger_key: str, delay_s: float) -> int:
        check_trigger(trigger_key, delay_s, limits=self._e.settings.limits)
        now = self._e.clock.now_ms()
        state = State.PENDING if delay_s == 0 else State.SCHEDULED
        fired = await self._e.store.trigger(trigger_key, state=state, due_ms=now + int(delay_s * 1000))
        for n in fired:
            self._e.admit(n)
        log.info("trigger %r fired %d notifies", trigger_key, len(fired))
        return len(fired)

