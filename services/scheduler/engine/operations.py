"""What callers may do with notifies: create, read, cancel, retry, update, trigger.

Each operation checks the request, changes the store, then tells the engine
what memory must follow; the engine owns what is due, ready and in flight."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import NamedTuple

from ...common.sealing import REDACTED
from ..store import codec
from ..store.port import Store
from .core import Engine
from .errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from .model import GroupStatus, ListFilter, NewGroup, NewNotify, Notification, Request, Spec, State
from .outcomes import UPDATABLE, first_state
from .transitions import RETRYABLE, UNFINISHED, UPDATABLE_STATES
from .validate import (Incoming, check_batch, check_filter, check_group, check_group_key, check_id, check_incoming,
                       incoming_size, check_schedule_input, check_trigger, require_valid, show)  # fmt: skip

log = logging.getLogger(__name__)


class Created(NamedTuple):
    """A notify create_incoming committed: what the answer adds to the caller's message."""

    id: str
    state: State
    due_ms: int | None
    create_ms: int
    group_key: str  # the batch's, when it stamped one


class Operations:
    def __init__(self, engine: Engine, store: Store) -> None:
        self._e = engine
        self._store = store

    @property
    def clock(self):
        return self._e.clock

    @property
    def limits(self):
        return self._e.settings.limits

    async def create_incoming(self, news: list[Incoming], *, batch: bool = False, group: NewGroup | None = None
                              ) -> list[Created | Notification]:  # fmt: skip
        """Commits the callers' messages (a group's key is stamped on each, whose own must be empty
        or the same): checked as they are, each stored spec encoded once from its message, and a
        Notification built only for what memory takes (due within what is loaded). Per item:
        Created, or the first notify with its request_id."""
        if not self._e.accepting:
            raise Unavailable("scheduler is not accepting work (starting or shutting down)")
        now = self._e.clock.now_ms()
        limits = self._e.settings.limits
        sizes = [incoming_size(new) for new in news]
        if batch:
            check_batch(news, limits=limits, sizes=sizes)
        violations = check_group(group, limits=limits) if group else []
        stamp = group.key if group and group.key and not violations else ""
        made: list[tuple[Incoming, Created]] = []
        spread = None  # the partition of this call's notifies without an ordering key: chosen once
        for i, new in enumerate(news):
            prefix = "notify" if not batch else f"requests[{i}].notify"
            if stamp and not violations and new.group_key != stamp:
                if new.group_key:
                    violations.append((f"{prefix}.group_key", f"differs from the batch's group_key {show(stamp)}"))
                new = new._replace(group_key=stamp)
            violations += check_incoming(new, now_ms=now, limits=limits, prefix=prefix, size=sizes[i])
            if not violations:
                if spread is None and not new.ordering_key:
                    spread = self._e.partition_for("")
                made.append((new, self._created(new, now, spread)))
        if violations:
            raise InvalidArgument(violations)
        rows = [codec.new_row(new, c.id, c.state, c.due_ms, now) for new, c in made]
        stored = await self._store.insert_new(rows, group=group if group and group.key else None)
        out: list[Created | Notification] = []
        for (new, c), first, size in zip(made, stored, sizes):  # made is one per news here (else InvalidArgument)
            out.append(c if first is None else first)
            if first is None and self._e.takes(c.due_ms, c.id):
                spec = codec.spec_from_message(new.message, trigger_key=new.trigger_key, ordering_key=new.ordering_key,
                                               queue=new.queue, group_key=new.group_key)  # fmt: skip
                self._e.admit(Notification(id=c.id, spec=spec, state=c.state, create_ms=now, request_id=new.request_id,
                                           due_ms=c.due_ms), size=size)  # its size as checked: not computed again
        if log.isEnabledFor(logging.DEBUG):
            for (new, c), first in zip(made, stored):
                if first is None:
                    log.debug("notify %s created: %s %s, due %s", c.id, new.method, new.message.request.url, c.due_ms)
        self._e.observers.emit(self._e.observers.created, sum(1 for first in stored if first is None))
        return out

    def _created(self, new: Incoming, now: int, spread: int | None) -> Created:
        """Its id, first state and due time (as outcomes.new_notification gives them)."""
        state, due = first_state(new.trigger_key, new.deliver_at_ms, now)
        part = None if new.ordering_key else spread
        return Created(self._e.new_id(new.ordering_key, now, partition=part), state, due, now, new.group_key)

    def partition_for(self, new: Incoming) -> int:
        """The partition a new notify would go to here; NotOwner when another scheduler owns it."""
        return self._e.partition_for(new.ordering_key)

    async def get(self, notify_id: str) -> Notification:
        check_id(notify_id)
        n = await self._store.get(notify_id)
        if n is None:
            raise NotFound(f"notify {notify_id!r} not found")
        return self._overlay(n)

    async def list(self, f: ListFilter, *, after_id: str, limit: int) -> list[Notification]:
        check_filter(f)
        if after_id:
            check_id(after_id, "page_token")
        return [self._overlay(n) for n in await self._store.list(f, after_id=after_id, limit=limit)]

    def _overlay(self, n: Notification) -> Notification:
        """The stored copy with the in-memory state (DELIVERING lives only in memory). A lease's
        result is applied in memory before the store commits it: until then the notify shows
        DELIVERING, not the state stored before its attempt (PENDING without that attempt)."""
        mine = self._e.held(n.id)
        if mine is not None and not n.state.terminal:
            state = State.DELIVERING if mine.leased else mine.state
            if state in (State.PENDING, State.DELIVERING):
                n.state = state  # due, or leased: known only here; other changes show once committed
        return n

    async def cancel(self, notify_id: str) -> Notification:
        check_id(notify_id)
        self._e.require_owner(notify_id)
        now = self._e.clock.now_ms()
        mine = self._e.held(notify_id)
        if mine is not None:
            if mine.state.terminal:  # its final result is being committed
                raise FailedPrecondition(f"notify {notify_id} is already {mine.state.name}; only unfinished notifies can be cancelled")
            self._e.forget(notify_id, mine.ordering_key, revoke=True)  # before any await: no grant or result slips in
        changed, cur, made = await self._store.transition(
            notify_id, allowed=UNFINISHED, state=State.CANCELLED, due_ms=None, complete_ms=now,
            group_callback=self._e.group_callback,
        )  # fmt: skip
        if cur is None:
            raise NotFound(f"notify {notify_id!r} not found")
        if not changed:
            raise FailedPrecondition(f"notify {notify_id} is already {cur.state.name}; only unfinished notifies can be cancelled")
        self._e.forget(notify_id, cur.spec.ordering_key, revoke=True)
        for n in made:
            self._e.admit(n)
        log.info("notify %s cancelled", notify_id)
        return cur

    async def retry(self, notify_id: str) -> Notification:
        check_id(notify_id)
        self._e.require_owner(notify_id)
        now = self._e.clock.now_ms()
        changed, cur, _ = await self._store.transition(
            notify_id, allowed=RETRYABLE, state=State.PENDING, due_ms=now, complete_ms=None, reset_budget=True,
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
        self._e.require_owner(notify_id)
        if self._e.is_leased(notify_id):
            raise FailedPrecondition(f"notify {notify_id} is being delivered; update it after this attempt")
        current = await self._store.get(notify_id)
        if current is None:
            raise NotFound(f"notify {notify_id!r} not found")
        if "schedule" in paths:
            bad = check_schedule_input(given, limits=self._e.settings.limits, prefix="notify")
            if bad:
                raise InvalidArgument(bad)
        changes = {f: getattr(candidate, f) for p in paths for f in UPDATABLE[p]}
        if "request" in changes:  # a secret sent back as read (<redacted>) keeps its stored value
            changes["request"] = keep_redacted(current.spec.request, changes["request"])
        spec = replace(current.spec, **changes)
        now = self._e.clock.now_ms()
        require_valid(spec, now_ms=now, limits=self._e.settings.limits)
        state, due = current.state, current.due_ms
        if "schedule" in paths:
            fresh = self._e.new_notification(NewNotify(spec), now, partition=0)  # only its state and due
            state, due = fresh.state, fresh.due_ms
        mine = self._e.withdraw(notify_id)  # refused if it was leased meanwhile
        changed, cur = await self._store.update(notify_id, allowed=UPDATABLE_STATES, spec=spec, state=state, due_ms=due)
        if cur is None:
            raise NotFound(f"notify {notify_id!r} not found")
        if not changed:
            self._e.put_back(mine, cur)
            raise FailedPrecondition(f"notify {notify_id} is {cur.state.name}; only unfinished ones can be updated")
        log.info("notify %s updated: %s", notify_id, ", ".join(sorted(paths)))
        self._e.replace(cur)
        return cur

    async def trigger(self, trigger_key: str, delay_s: float) -> int:
        """Fires what waits on trigger_key in the partitions held here (the transport fans a
        Trigger out to every scheduler and adds their counts up)."""
        check_trigger(trigger_key, delay_s, limits=self._e.settings.limits)
        now = self._e.clock.now_ms()
        state = State.PENDING if delay_s == 0 else State.SCHEDULED
        fired = await self._store.trigger(
            trigger_key, state=state, due_ms=now + int(delay_s * 1000), partitions=self._e.held_partitions()
        )
        for n in fired:
            self._e.admit(n)
        log.info("trigger %r fired %d notifies", trigger_key, len(fired))
        return len(fired)

    # --- fan-out groups ---------------------------------------------------

    async def group(self, group_key: str) -> GroupStatus:
        """A group's members by state, as stored (what every scheduler sharing the store sees)."""
        if bad := check_group_key(group_key):
            raise InvalidArgument(bad)
        g = await self._store.group(group_key)
        if g is None:
            raise NotFound(f"group {group_key!r} has no members")
        return g

    async def cancel_group(self, group_key: str) -> tuple[int, GroupStatus]:
        """Cancels every unfinished member held here, as cancel() would each; returns how many and
        the group (the transport fans CancelGroup out to every scheduler)."""
        if bad := check_group_key(group_key):
            raise InvalidArgument(bad)
        self._e.forget_group(group_key)  # before any await: no grant slips in
        cancelled, made = await self._store.cancel_group(
            group_key, complete_ms=self._e.clock.now_ms(), group_callback=self._e.group_callback,
            partitions=self._e.held_partitions(),
        )  # fmt: skip
        for notify_id, ordering_key in cancelled:  # the loader may have brought some in meanwhile
            self._e.forget(notify_id, ordering_key, revoke=True)
        for n in made:
            self._e.admit(n)
        g = await self.group(group_key)
        log.info("group %s: %d members cancelled", group_key, len(cancelled))
        return len(cancelled), g


def keep_redacted(old: Request, new: Request) -> Request:
    """new, with each header that reads <redacted> set back to old's value of that header."""
    stored = {k.lower(): v for k, v in old.headers.items()}
    if not any(v == REDACTED and k.lower() in stored for k, v in new.headers.items()):
        return new
    headers = {k: stored[k.lower()] if v == REDACTED and k.lower() in stored else v for k, v in new.headers.items()}
    return replace(new, headers=headers)
