"""The form a notify waits in within the horizon: as few objects of its own as it can.

Most notifies due within the horizon make the same call under the same rules as many
others (one webhook, one policy); what differs is their id and due time. A held
notify that waits in the timer wheel is its own wheel entry (wheel.add_timed) and
keeps a Spec it shares with every other held notify alike: `SharedSpecs` keeps one
per kind, with deliver_at_ms left out (a held notify's time is its due_ms, and the
store keeps the spec as the caller gave it). Nothing outside the engine sees these
copies: the operations answer with the stored notifies they were given.
"""

from __future__ import annotations

from .model import Notification, Spec

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
            if len(self._kinds) >= self._max:
                del self._kinds[next(iter(self._kinds))]
            self._kinds[key] = found
        return found

    def held_copy(self, n: Notification) -> Notification:
        """n as it waits in memory: a copy of its own with the shared spec (n, the operation's
        answer, stays as it is)."""
        return Notification(n.id, self.spec(n.spec), n.state, n.create_ms, n.request_id, n.due_ms, n.complete_ms,
                            n.attempt_count, n.budget_base, n.first_attempt_ms, n.attempts, n.unreadable, n.version)  # fmt: skip
