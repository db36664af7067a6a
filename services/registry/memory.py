"""In-process registry: the all-in-one process's registry and the twin used in tests.

``MemoryCatalog`` is the shared state (the "agent"): registrations with TTL
deadlines measured on an injectable clock.
``MemoryRegistry`` is one component's handle on it: it heartbeats what it
registered and, on close, deregisters only that. Components of one process
share a catalog; a ``MemoryRegistry()`` made without one gets its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from ._tasks import Holdings, until_stopped
from .base import Node, Service, ServiceNotFound, Watcher

Clock = Callable[[], float]


@dataclass
class _Entry:
    node: Node
    ttl: float
    deadline: float


class MemoryCatalog:
    """Registrations with TTL health and change notification.

    A registration is healthy until ``clock() >= deadline``; it is forgotten
    once it has been unhealthy for ``reap_after`` seconds (Consul's
    DeregisterCriticalServiceAfter).
    """

    def __init__(self, *, clock: Clock = time.monotonic, reap_after: float = 60.0) -> None:
        self.clock = clock
        self._reap_after = reap_after
        self._services: dict[str, dict[str, _Entry]] = {}
        self._changed = asyncio.Event()

    def register(self, service_name: str, node: Node, *, ttl: float) -> None:
        """Add or replace a node; healthy for ``ttl`` from now unless passed again."""
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl!r}")
        entry = _Entry(node, ttl, self.clock() + ttl)
        self._services.setdefault(service_name, {})[node.id] = entry
        self._notify()

    def pass_check(self, service_name: str, node_id: str) -> bool:
        """Refresh a node's deadline; False if it is not registered (anymore)."""
        entry = self._services.get(service_name, {}).get(node_id)
        if entry is None:
            return False
        was_healthy = entry.deadline > self.clock()
        entry.deadline = self.clock() + entry.ttl
        if not was_healthy:
            self._notify()
        return True

    def deregister(self, service_name: str, node_id: str) -> None:
        nodes = self._services.get(service_name, {})
        if nodes.pop(node_id, None) is not None:
            if not nodes:
                del self._services[service_name]
            self._notify()

    def healthy(self, service_name: str) -> tuple[Node, ...]:
        self._reap()
        now = self.clock()
        entries = self._services.get(service_name, {}).values()
        return tuple(sorted((e.node for e in entries if e.deadline > now), key=lambda n: n.id))

    def service_names(self) -> list[str]:
        return sorted(self._services)

    def seconds_to_next_expiry(self, service_name: str) -> float | None:
        now = self.clock()
        deadlines = [e.deadline - now for e in self._services.get(service_name, {}).values()]
        upcoming = [d for d in deadlines if d > 0]
        return min(upcoming) if upcoming else None

    def changed(self) -> asyncio.Event:
        """An event set at the next change; take it *before* reading the state."""
        return self._changed

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _reap(self) -> None:
        cutoff = self.clock() - self._reap_after
        for name, nodes in list(self._services.items()):
            for node_id, entry in list(nodes.items()):
                if entry.deadline <= cutoff:
                    self.deregister(name, node_id)


class MemoryWatcher:
    """Wakes on catalog changes, and at the next TTL expiry (checked at least once a second)."""

    def __init__(self, catalog: MemoryCatalog, name: str, *, max_poll: float = 1.0) -> None:
        self._catalog = catalog
        self._name = name
        self._max_poll = max_poll
        self._last: tuple[Node, ...] | None = None
        self._stopped = asyncio.Event()

    async def next(self) -> list[Node]:
        while True:
            changed = self._catalog.changed()
            nodes = self._catalog.healthy(self._name)
            if nodes != self._last:
                self._last = nodes
                return list(nodes)
            timeout = self._catalog.seconds_to_next_expiry(self._name) or self._max_poll
            await until_stopped(self._wait(changed, min(timeout, self._max_poll)), self._stopped)

    def stop(self) -> None:
        self._stopped.set()

    @staticmethod
    async def _wait(event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)


class MemoryRegistry:
    """A Registry over a MemoryCatalog; heartbeats every ttl/3 on real time."""

    def __init__(self, catalog: MemoryCatalog | None = None) -> None:
        self.catalog = catalog if catalog is not None else MemoryCatalog()
        self._held = Holdings()

    async def register(self, service_name: str, node: Node, *, ttl: float) -> None:
        self._held.check_open()
        self.catalog.register(service_name, node, ttl=ttl)

        async def beat() -> None:
            if not self.catalog.pass_check(service_name, node.id):
                self.catalog.register(service_name, node, ttl=ttl)  # reaped meanwhile

        await self._held.start_heartbeat(
            (service_name, node.id), beat, interval=ttl / 3, name=f"heartbeat {service_name}/{node.id}"
        )

    async def deregister(self, service_name: str, node_id: str) -> None:
        await self._held.stop_heartbeat((service_name, node_id))
        self.catalog.deregister(service_name, node_id)

    async def get_service(self, name: str) -> list[Node]:
        nodes = self.catalog.healthy(name)
        if not nodes:
            raise ServiceNotFound(name)
        return list(nodes)

    async def list_services(self) -> list[Service]:
        services = (Service(n, self.catalog.healthy(n)) for n in self.catalog.service_names())
        return [s for s in services if s.nodes]

    async def watch(self, name: str) -> Watcher:
        watcher = MemoryWatcher(self.catalog, name)
        self._held.watchers.append(watcher)
        return watcher

    async def close(self) -> None:
        await self._held.close(self.deregister)
