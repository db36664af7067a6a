"""The ready queue: due notifies waiting for a dispatcher, fair across named queues,
one at a time per ordering key."""

from __future__ import annotations

import heapq
from collections import deque
from typing import Callable

from .model import Notification


class ReadyQueue:
    """FIFO per named queue, served round-robin. An ordering key is held by one
    notify (its head) from the moment it is due until it finishes; the others
    wait in due order behind it.

    Entries keep the notify's version from when it was offered: one whose notify
    has changed since (cancelled, updated, granted) is skipped (lazy removal)."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[tuple[Notification, int]]] = {}
        self._turns: deque[str] = deque()
        self._heads: dict[str, str] = {}
        self._waiting: dict[str, list[tuple[int, str, Notification, int]]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def hold(self, key: str, notify_id: str) -> None:
        """Marks key as held by notify_id (a head waiting to retry, found at start-up)."""
        self._heads[key] = notify_id

    def offer(self, n: Notification) -> None:
        key = n.spec.ordering_key
        if key:
            head = self._heads.setdefault(key, n.id)
            if head != n.id:
                heapq.heappush(self._waiting.setdefault(key, []), (n.due_ms or 0, n.id, n, n.version))
                return
        self._push(n, n.version)

    def release(self, key: str, notify_id: str) -> None:
        """The head of key finished (or was cancelled): the next live notify behind it gets its turn."""
        if not key or self._heads.get(key) != notify_id:
            return
        del self._heads[key]
        waiting = self._waiting.get(key)
        while waiting:
            _, _, n, version = heapq.heappop(waiting)
            if n.version == version:
                self._heads[key] = n.id
                self._push(n, version)
                break
        if not waiting:
            self._waiting.pop(key, None)

    def drop_keys(self, lost: Callable[[str], bool]) -> None:
        """Forgets the heads and waiting lines of the ordering keys `lost` picks (a partition
        given up: its notifies left memory, their entries are stale already)."""
        for key in [k for k in self._heads if lost(k)]:
            del self._heads[key]
        for key in [k for k in self._waiting if lost(k)]:
            del self._waiting[key]

    def pop(self, allowed: Callable[[str], bool] = lambda queue: True) -> Notification | None:
        """The next live notify from the next queue whose turn it is and that `allowed` admits."""
        for _ in range(len(self._turns)):
            name = self._turns[0]
            self._turns.rotate(-1)
            if not allowed(name):
                continue
            q = self._queues[name]
            while q:
                n, version = q.popleft()
                self._count -= 1
                if n.version == version:
                    self._drop_if_empty(name)
                    return n
            self._drop_if_empty(name)
        return None

    def queue_names(self) -> list[str]:
        return list(self._queues)

    def head(self, key: str) -> str | None:
        """The notify holding ordering key `key`, if any."""
        return self._heads.get(key)

    def _push(self, n: Notification, version: int) -> None:
        name = n.spec.queue
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = deque()
            self._turns.append(name)
        q.append((n, version))
        self._count += 1

    def _drop_if_empty(self, name: str) -> None:
        if not self._queues[name]:
            del self._queues[name]
            self._turns.remove(name)
