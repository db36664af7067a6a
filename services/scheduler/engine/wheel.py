"""A hierarchical timer wheel (Varghese & Lauck; the Linux kernel's timer layout).

Times are integer milliseconds. Level L has 64 slots of 64**L ms each; an item
sits at the lowest level whose block it shares with `now`, and moves down a
level (cascades) when `now` reaches its slot. A bit mask per level finds the
next non-empty slot without scanning, so an idle wheel costs nothing and a
long sleep is one jump. Items further out than the top level wait in a heap.

The wheel knows no clock: callers pass times in. Removal is lazy: callers
check, when an item fires, whether it still counts (a tag added with the item,
such as the version it was scheduled at, comes back with it for that).

An item that carries its own time (`add_timed`: its `due_ms` attribute) is its
own entry, with no tuple around it: the engine's many held notifies wait so. It
is placed by the time it carries whenever it is placed or cascaded, and fires as
itself; one whose time has gone (None) fires at the next advance().
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any

BITS = 6
SLOTS = 1 << BITS
MASK = SLOTS - 1


class TimerWheel:
    def __init__(self, *, now_ms: int, levels: int = 4) -> None:
        self._now = now_ms
        self._levels = levels
        # Entries are (due_ms, item) or (due_ms, item, tag) as added, and fire as such.
        self._slots: list[list[list[tuple]]] = [[[] for _ in range(SLOTS)] for _ in range(levels)]
        self._masks = [0] * levels
        self._overflow: list[tuple[int, int, tuple]] = []
        self._seq = itertools.count()
        self._due: list[tuple] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def now_ms(self) -> int:
        return self._now

    def add(self, due_ms: int, item: Any, tag: Any = None) -> None:
        """Schedules item; one already due fires at the next advance(). With a tag, the
        item fires as (due_ms, item, tag)."""
        self._size += 1
        self._place((due_ms, item) if tag is None else (due_ms, item, tag))

    def add_timed(self, item: Any) -> None:
        """Schedules item at its own `due_ms`; it fires as itself (no tuple is made for it)."""
        self._size += 1
        self._place(item)

    def _place(self, entry) -> None:
        now = self._now
        due_ms = _due(entry)
        if due_ms <= now:
            self._due.append(entry)
            return
        for level in range(self._levels):
            shift = BITS * (level + 1)
            if due_ms >> shift == now >> shift:
                slot = (due_ms >> (BITS * level)) & MASK
                self._slots[level][slot].append(entry)
                self._masks[level] |= 1 << slot
                return
        heapq.heappush(self._overflow, (due_ms, next(self._seq), entry))

    def next_event_ms(self) -> int | None:
        """The earliest time at which advance() has work: an item due, or a cascade."""
        if self._due:
            return self._now
        now = self._now
        for level in range(self._levels):
            shift = BITS * level
            cur = (now >> shift) & MASK
            later = self._masks[level] >> (cur + 1)
            if later:
                slot = cur + 1 + ((later & -later).bit_length() - 1)
                block = (now >> (shift + BITS)) << (shift + BITS)
                return block | (slot << shift)
        if self._overflow:
            top = BITS * self._levels
            return max(now + 1, (self._overflow[0][0] >> top) << top)
        return None

    def advance(self, to_ms: int) -> list[tuple]:
        """Moves time to to_ms and returns every item due by then, earliest first."""
        fired, self._due = self._due, []
        while True:
            event = self.next_event_ms()
            if event is None or event > to_ms:
                break
            self._now = max(self._now, event)
            fired.extend(self._due)
            self._due = []
            self._cascade()
        self._now = max(self._now, to_ms)
        fired.extend(self._due)
        self._due = []
        self._size -= len(fired)
        fired.sort(key=_due)
        return fired

    def _cascade(self) -> None:
        """Re-places the items of every slot that `now` has just reached."""
        now = self._now
        for level in range(self._levels):
            slot = (now >> (BITS * level)) & MASK
            if self._masks[level] >> slot & 1:
                items = self._slots[level][slot]
                self._slots[level][slot] = []
                self._masks[level] &= ~(1 << slot)
                for entry in items:
                    self._place(entry)
        top = BITS * self._levels
        while self._overflow and self._overflow[0][0] >> top == now >> top:
            _, _, entry = heapq.heappop(self._overflow)
            self._place(entry)


def _due(entry) -> int:
    """An entry's time: a tuple's first field, or the time an item added with add_timed carries."""
    if isinstance(entry, tuple):
        return entry[0]
    due = entry.due_ms
    return -1 if due is None else due
