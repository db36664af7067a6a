"""Service discovery behind one small async interface (see ``base``).

Adapters: ``MemoryRegistry`` (in-process), ``StaticRegistry`` (configured
addresses), ``ConsulRegistry`` (Consul HTTP API), and ``CachedRegistry``, the
wrapper that serves stale answers while its inner registry is unavailable.
``from_url`` builds one from a ``NOTIFY_REGISTRY`` value.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .base import (
    Node,
    Registry,
    RegistryError,
    RegistryUnavailable,
    Service,
    ServiceNotFound,
    Watcher,
    WatcherStopped,
)
from .cache import CachedRegistry
from .consul import ConsulRegistry
from .memory import MemoryCatalog, MemoryRegistry
from .static import StaticRegistry, parse_address

__all__ = [
    "CachedRegistry",
    "ConsulRegistry",
    "MemoryCatalog",
    "MemoryRegistry",
    "Node",
    "Registry",
    "RegistryError",
    "RegistryUnavailable",
    "Service",
    "ServiceNotFound",
    "StaticRegistry",
    "Watcher",
    "WatcherStopped",
    "from_url",
    "parse_address",
]

ACCEPTED_FORMS = "'memory', 'static:host:port[,host:port...]' or 'consul://host:port'"


def from_url(url: str) -> Registry:
    """``memory`` | ``static:host:port,host:port`` | ``consul://host:port`` (cached).

    Raises ValueError naming NOTIFY_REGISTRY and the accepted forms.
    """
    text = url.strip()
    try:
        if text == "memory":
            return MemoryRegistry()
        if text.startswith("static:"):
            return StaticRegistry(a for a in text.removeprefix("static:").split(",") if a.strip())
        if text.startswith("consul://"):
            parts = urlsplit(text)
            port = 8500 if parts.port is None else parts.port  # .port raises ValueError if bad
            if not parts.hostname or not port or parts.path not in ("", "/") or parts.query:
                raise ValueError("expected consul://host:port")
            return CachedRegistry(ConsulRegistry(host=parts.hostname, port=port))
    except ValueError as exc:
        raise ValueError(f"NOTIFY_REGISTRY={url!r} is invalid ({exc}); use {ACCEPTED_FORMS}") from None
    raise ValueError(f"NOTIFY_REGISTRY={url!r} is not supported; use {ACCEPTED_FORMS}")
