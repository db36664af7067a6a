"""Registry from configured addresses, for deployments without Consul.

Every service name resolves to the same configured nodes, which are assumed
healthy. register/deregister are accepted and do nothing; there is no catalogue
to list.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from ._tasks import until_stopped
from .base import Node, Service, Watcher


def parse_address(address: str) -> Node:
    """``host:port`` or ``[v6addr]:port`` -> Node(id=address). Raises ValueError."""
    text = address.strip()
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"bad address {address!r}: write IPv6 hosts in brackets, [::1]:50051")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad address {address!r}: expected host:port with a port from 1 to 65535")
    return Node(id=text, address=host, port=int(port_text))


class _StaticWatcher:
    def __init__(self, nodes: tuple[Node, ...]) -> None:
        self._nodes = nodes
        self._sent = False
        self._stopped = asyncio.Event()

    async def next(self) -> list[Node]:
        if self._sent:  # nothing ever changes: wait for stop()
            await until_stopped(asyncio.Event().wait(), self._stopped)
        await until_stopped(asyncio.sleep(0), self._stopped)
        self._sent = True
        return list(self._nodes)

    def stop(self) -> None:
        self._stopped.set()


class StaticRegistry:
    def __init__(self, addresses: Iterable[str]) -> None:
        nodes = tuple(parse_address(a) for a in addresses)
        if not nodes:
            raise ValueError("a static registry needs at least one host:port address")
        self.nodes = nodes
        self._watchers: list[_StaticWatcher] = []

    async def register(self, service_name: str, node: Node, *, ttl: float) -> None:
        pass

    async def deregister(self, service_name: str, node_id: str) -> None:
        pass

    async def get_service(self, name: str) -> list[Node]:
        return list(self.nodes)

    async def list_services(self) -> list[Service]:
        return []

    async def watch(self, name: str) -> Watcher:
        watcher = _StaticWatcher(self.nodes)
        self._watchers.append(watcher)
        return watcher

    async def close(self) -> None:
        for watcher in self._watchers:
            watcher.stop()

