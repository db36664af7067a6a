"""The form a notify waits in within the horizon: as few objects of its own as it can.

Most notifies due within the horizon make the same call under the same rules as many
others (one webhook, one policy); what differs is their id and due time. A held
notify that is not due yet waits as a `Waiting`: one small object with its id, due
time, state and versions, that is its own timer-wheel entry (wheel.add_timed), and
a Spec it shares with every other held notify alike (`SharedSpecs` keeps one per
kind, with deliver_at_ms left out: a held notify's time is its due_ms, and the
store keeps the spec as the caller gave it). When it falls due, the engine unpacks
it into a full Notification. Nothing outside the engine sees these: the operations
answer with the notifies they were given.
"""

from __future__ import annotations

from .model import NO_ATTEMPTS, SHARED_REQUEST_BYTES, Notification, Spec, State

MAX_KINDS = 4096  # specs kept for sharing; the oldest is let go beyond it (held notifies keep theirs)


class SharedSpecs:
    def __init__(self, max_kinds: int = MAX_KINDS) -> None:
        self._kinds: dict[tuple, Spec] = {}
        self._max = max_kinds

    def __len__(self) -> int:
        return len(self._kinds)

    def spec(self, spec: Spec) -> Spec:
        """The shared spec for held notifies like this one. Request, policies and labels are
        compared by identity: they are shared objects already (model.plain_request, shared()),
        and the kept spec holds them, so an identity cannot be reused while its key lives."""
        key = (id(spec.request), id(spec.retry), id(spec.success), id(spec.labels), spec.trigger_key, spec.ordering_key,
               spec.queue, spec.fire_and_forget, spec.timeout, spec.expire_at_ms, spec.callback_url, spec.group_key,
               spec.created_by)  # fmt: skip
        found = self._kinds.get(key)
        if found is None:
            found = Spec(spec.request, None, spec.trigger_key, spec.ordering_key, spec.queue, spec.retry, spec.success,
                         spec.fire_and_forget, spec.timeout, spec.expire_at_ms, spec.callback_url, spec.labels,
                         spec.group_key, spec.created_by)  # fmt: skip
            r = spec.request
            if r.headers or r.form or spec.labels or len(r.body) + len(r.json_body) + len(r.url) > SHARED_REQUEST_BYTES:
                return found  # a request or labels of its own (never shared) or a big body: keeping it would only pin it
            if len(self._kinds) >= self._max:
                del self._kinds[next(iter(self._kinds))]
            self._kinds[key] = found
        return found


_PLAIN = ("", None, 0, 0, None, NO_ATTEMPTS, "")  # what a notify never attempted carries beyond its id and times
_SCHEDULED = State.SCHEDULED


class Waiting:
    """A held notify not due yet. It reads like a Notification where the engine reads one
    that waits (id, spec, state, due_ms, version, and the rest as properties) and takes the
    same moves (Held.move); `full()` unpacks it when it falls due.

    Four slots (64 bytes), and a time of 32. Most held notifies are scheduled, never attempted, and at version 1
    (taken in once, not changed since): for those `_more` is just the create time. Any other
    (a retry waiting, or one that moved or went stale) keeps a tuple there: (create_ms, state,
    version, *the rest). A Waiting is a fresh copy: it starts at version 0 and is scheduled
    once, right after Held.take() (version 1), so its wheel entry is current while its version
    is still 1."""

    __slots__ = ("id", "spec", "due_ms", "_more")
    timer_version = 1

    def __init__(self, n: Notification, spec: Spec) -> None:
        # `| 0`: a compact copy of the time. One from an addition (now + delay, the create path) keeps
        # the spare digit the addition allocated: 36 bytes, a 48-byte block; the copy takes 32.
        self.id, self.spec, self.due_ms = n.id, spec, n.due_ms | 0
        self._more = (n.create_ms, n.state, 0, n.request_id, n.complete_ms, n.attempt_count, n.budget_base, n.first_attempt_ms,
                      n.attempts, n.unreadable)  # fmt: skip

    def _all(self) -> tuple:
        more = self._more
        return more if isinstance(more, tuple) else (more, _SCHEDULED, 1, *_PLAIN)

    def _set(self, i: int, value) -> None:
        more = list(self._all())
        more[i] = value
        if more[1] == _SCHEDULED and more[2] == 1 and tuple(more[3:]) == _PLAIN:
            self._more = more[0]  # the plain form: just the create time
        else:
            self._more = tuple(more)

    def full(self) -> Notification:
        create, state, version, request_id, complete, count, base, first, attempts, unreadable = self._all()
        return Notification(self.id, self.spec, state, create, request_id, self.due_ms, complete, count, base, first, attempts,
                            unreadable, version, self.timer_version)  # fmt: skip

    @property
    def state(self) -> State:
        more = self._more
        return more[1] if isinstance(more, tuple) else _SCHEDULED

    @state.setter
    def state(self, value: State) -> None:
        self._set(1, value)

    @property
    def version(self) -> int:
        more = self._more
        return more[2] if isinstance(more, tuple) else 1

    @version.setter
    def version(self, value: int) -> None:
        self._set(2, value)

    create_ms = property(lambda self: self._all()[0])
    request_id = property(lambda self: self._all()[3])
    complete_ms = property(lambda self: self._all()[4])
    attempt_count = property(lambda self: self._all()[5])
    budget_base = property(lambda self: self._all()[6])
    first_attempt_ms = property(lambda self: self._all()[7])
    attempts = property(lambda self: self._all()[8])
    unreadable = property(lambda self: self._all()[9])
