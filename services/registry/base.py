"""The registry port: plain data types, the protocols and one exception hierarchy.

Modelled on go-micro's ``registry/registry.go``: a tiny interface (register,
deregister, get_service, list_services, watch), a watcher with just ``next()``
and ``stop()``, and adapters as peers in their own modules (``memory``,
``static``, ``consul``) plus a caching wrapper (``cache``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Node:
    """One instance of a service: where to reach it and what it says about itself."""

    id: str
    address: str
    port: int
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # Frozen all the way down: callers cannot mutate a node another task holds.
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))


@dataclass(frozen=True)
class Service:
    """A service name and its healthy nodes."""

    name: str
    nodes: tuple[Node, ...] = ()


class RegistryError(Exception):
    """Base of every registry failure. Not retryable unless a subclass says so."""

    retryable = False


class RegistryUnavailable(RegistryError):
    """The backend (e.g. Consul) could not be reached or answered 5xx. Retry later."""

    retryable = True


class ServiceNotFound(RegistryError):
    """No healthy node is registered under that service name."""


class WatcherStopped(RegistryError):
    """``Watcher.next()`` was called on (or was waiting in) a stopped watcher."""


@runtime_checkable
class Watcher(Protocol):
    async def next(self) -> list[Node]:
        """The first call returns the current healthy nodes (maybe none); each
        later call waits until that set differs from the one returned before.
        Raises WatcherStopped once stop() was called, RegistryUnavailable when
        the backend stays unreachable (calling next() again resumes)."""
        ...

    def stop(self) -> None:
        """Stop watching; a pending next() raises WatcherStopped. Idempotent."""
        ...


@runtime_checkable
class Registry(Protocol):
    async def register(self, service_name: str, node: Node, *, ttl: float) -> None:
        """Register ``node`` with a TTL health check and keep it passing with a
        background heartbeat until deregistered or closed. Registering the same
        node again replaces it."""
        ...

    async def deregister(self, service_name: str, node_id: str) -> None:
        """Stop the heartbeat and remove the node. Unknown nodes are a no-op."""
        ...

    async def get_service(self, name: str) -> list[Node]:
        """Healthy nodes of ``name``, sorted by id. Raises ServiceNotFound if none."""
        ...

    async def list_services(self) -> list[Service]:
        """Every service with at least one healthy node, sorted by name."""
        ...

    async def watch(self, name: str) -> Watcher:
        """A watcher over the healthy nodes of ``name``."""
        ...

    async def close(self) -> None:
        """Stop watchers and heartbeats and deregister what this registry
        registered. Idempotent."""
        ...
