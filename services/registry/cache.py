"""CachedRegistry: the fallback wrapper (go-micro ``registry/cache``).

get_service answers from a cache that is fresh for ``ttl`` seconds. When it is
stale the inner registry is asked again (one request per name at a time,
however many callers wait). If the inner registry is unavailable, the last
good answer is served instead, and the inner registry is not asked again for
that name for ``retry_interval`` seconds, so a Consul outage does not turn into
a storm of doomed requests. ServiceNotFound is never papered over: it drops the
cached answer. Every other method goes straight to the inner registry;
register and deregister also drop the cached answer for their service.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import NamedTuple

from .base import Node, Registry, RegistryUnavailable, Service, ServiceNotFound, Watcher

log = logging.getLogger(__name__)


class _Answer(NamedTuple):
    nodes: tuple[Node, ...]
    fetched_at: float


class CachedRegistry:
    def __init__(
        self,
        inner: Registry,
        *,
        ttl: float = 5.0,
        retry_interval: float = 1.0,
        max_stale: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self._ttl = ttl
        self._retry_interval = retry_interval
        self._max_stale = max_stale
        self._clock = clock
        self._answers: dict[str, _Answer] = {}
        self._failed_at: dict[str, float] = {}
        self._inflight: dict[str, asyncio.Task[list[Node]]] = {}

    async def get_service(self, name: str) -> list[Node]:
        now = self._clock()
        answer = self._answers.get(name)
        if answer is not None and self._max_stale is not None and now - answer.fetched_at > self._max_stale:
            answer = None
        if answer is not None and now - answer.fetched_at < self._ttl:
            return list(answer.nodes)
        failed_at = self._failed_at.get(name)
        if answer is not None and failed_at is not None and now - failed_at < self._retry_interval:
            return list(answer.nodes)  # throttled: the last refresh failed moments ago
        try:
            return await self._refresh(name)
        except ServiceNotFound:
            self._answers.pop(name, None)
            raise
        except RegistryUnavailable as exc:
            self._failed_at[name] = self._clock()
            if answer is None:
                raise
            age = self._clock() - answer.fetched_at
            log.warning("registry unavailable (%s); serving %r as of %.0fs ago", exc, name, age)
            return list(answer.nodes)

    async def register(self, service_name: str, node: Node, *, ttl: float) -> None:
        await self.inner.register(service_name, node, ttl=ttl)
        self._answers.pop(service_name, None)

    async def deregister(self, service_name: str, node_id: str) -> None:
        await self.inner.deregister(service_name, node_id)
        self._answers.pop(service_name, None)

    async def list_services(self) -> list[Service]:
        return await self.inner.list_services()

    async def watch(self, name: str) -> Watcher:
        return await self.inner.watch(name)

    async def close(self) -> None:
        await self.inner.close()

    async def _refresh(self, name: str) -> list[Node]:
        task = self._inflight.get(name)
        if task is None:
            task = asyncio.create_task(self._fetch(name), name=f"registry refresh {name}")
            self._inflight[name] = task
            task.add_done_callback(lambda t: self._settle(name, t))
        return list(await asyncio.shield(task))

    async def _fetch(self, name: str) -> list[Node]:
        nodes = await self.inner.get_service(name)
        self._answers[name] = _Answer(tuple(nodes), self._clock())
        self._failed_at.pop(name, None)
        return nodes

    def _settle(self, name: str, task: asyncio.Task[list[Node]]) -> None:
        if self._inflight.get(name) is task:
            del self._inflight[name]
        if not task.cancelled():
            task.exception()  # retrieved: a caller that gave up must not leave it "never retrieved"
