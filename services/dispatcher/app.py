"""The dispatcher's composition root: HTTP sender behind the per-target limiter, lease client, registry entry."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from ..common.auth import Authenticator, call_metadata
from ..common.config import Settings, StartupError
from ..common.grpcutil import message_options
from ..common.tls import ServerTls, channel_credentials
from ..common.web import OpsServer, add_collector, gauge
from ..registry import Node, Registry, RegistryError
from .fleet import LeaseFleet
from .guard import NetworkPolicy
from .hosts import HostLimiter, LimitedSender
from .http import HttpSender
from .metrics import DispatcherMetrics, MeteredSender
from .signing import parse_secret
from .stream import Transport, grpc_transport

log = logging.getLogger(__name__)
REGISTRY_TTL_S = 10.0


class DispatcherApp:
    LIVE_SETTINGS = frozenset({"capacity", "grace"})  # what reload() applies; the rest needs a restart

    def __init__(
        self, settings: Settings, *, registry: Registry, dispatcher_id: str | None = None,
        metrics: CollectorRegistry | None = None, local: Callable[[str], Transport | None] | None = None,
    ) -> None:  # fmt: skip
        """local: for a scheduler address, a transport that reaches it in this process (dev), or None."""
        self.settings = settings
        self.registry = registry
        secret = parse_secret(settings.signing_secret) if settings.signing_secret else None
        self.sender = HttpSender(policy=NetworkPolicy.from_csv(settings.allow_networks), signing_secret=secret)
        self.hosts = HostLimiter(ceiling=settings.capacity)
        self.metrics_registry = metrics if metrics is not None else CollectorRegistry(auto_describe=False)
        self.metrics = DispatcherMetrics(self.metrics_registry)
        add_collector(self.metrics_registry, self._metrics)
        channel_credentials(settings)  # fails fast on a bad NOTIFY_TLS_* file; each connect reads them again
        remote = grpc_transport(lambda: channel_credentials(settings), call_metadata(settings.token),
                                message_options(settings.max_message_bytes))  # fmt: skip
        self.client = LeaseFleet(
            sender=MeteredSender(LimitedSender(self.sender, self.hosts), self.metrics), discover=self._discover, capacity=settings.capacity,
            dispatcher_id=dispatcher_id, max_message_bytes=settings.max_message_bytes,
            transport=remote if local is None else _either(local, remote),
        )  # fmt: skip
        self._tls = ServerTls.from_settings(settings) if settings.http_addr else None
        self._auth = Authenticator(settings.tokens_file) if settings.metrics_auth else None
        self._task: asyncio.Task | None = None
        self._ops: OpsServer | None = None
        self._stopped = False
        self._registered = False

    async def _discover(self) -> list[str]:
        """Every healthy scheduler: the dispatcher keeps a stream to each."""
        nodes = await self.registry.get_service(self.settings.service_name)
        if not nodes:
            raise LookupError(f"no healthy {self.settings.service_name} in the registry ({self.settings.registry})")
        return sorted({f"{node.address}:{node.port}" for node in nodes})

    async def start(self) -> None:
        await self.sender.start()
        node = Node(id=self.client.dispatcher_id, address="", port=0, metadata={"role": "dispatcher"})
        try:
            await self.registry.register("notifyagent-dispatcher", node, ttl=REGISTRY_TTL_S)
        except RegistryError as e:
            raise StartupError(f"NOTIFY_REGISTRY: cannot register: {e}") from e
        self._registered = True
        self._task = asyncio.create_task(self.client.run(), name="lease-client")
        self._task.add_done_callback(_log_if_failed)
        if self.settings.http_addr:
            self._ops = OpsServer(
                self.settings.http_addr, healthy=lambda: not self._stopped, registry=self.metrics_registry,
                ssl_context=self._tls.ssl_context() if self._tls else None,
                authenticator=self._auth, metrics_auth=self.settings.metrics_auth,
            )  # fmt: skip
            await self._ops.start()
        log.info("dispatcher %s started (capacity %d)", self.client.dispatcher_id, self.settings.capacity)

    async def stop(self) -> None:
        """Deregister, stop taking grants, finish and report calls within the grace period. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._registered:
            try:
                await self.registry.deregister("notifyagent-dispatcher", self.client.dispatcher_id)
            except Exception as e:
                log.warning("deregistering failed: %s", e)
        await self.client.stop(self.settings.grace)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.sender.close()
        if self._ops is not None:
            await self._ops.stop()
        if self._task is not None:  # it started: say so (a failed start stays one line)
            log.info("dispatcher %s stopped after %d calls", self.client.dispatcher_id, self.client.calls_done)

    def reread_files(self) -> list[str]:
        """SIGHUP: the HTTP port's TLS files and the /metrics tokens again (the lease client reads
        its TLS files on every connect)."""
        return [c for c in (self._auth.reload() if self._auth else None, self._tls.reload() if self._tls else None) if c]

    async def reload(self, settings: Settings) -> list[str]:
        """Applies the LIVE_SETTINGS that changed; returns what it did, for the log."""
        changes = []
        if settings.capacity != self.settings.capacity:
            self.client.set_capacity(settings.capacity)
            self.hosts.set_ceiling(settings.capacity)
            changes.append(f"dispatcher capacity {self.settings.capacity} -> {settings.capacity} (announced on a fresh stream)")
        if settings.grace != self.settings.grace:
            changes.append(f"dispatcher grace {self.settings.grace:g} s -> {settings.grace:g} s")
        self.settings = replace(self.settings, **{name: getattr(settings, name) for name in self.LIVE_SETTINGS})
        return changes

    def _metrics(self):
        yield gauge("notifyagent_dispatcher_capacity", "Calls this dispatcher runs at once", self.client.capacity)
        yield gauge("notifyagent_dispatcher_in_flight", "Calls running now", self.client.in_flight)
        yield gauge("notifyagent_dispatcher_calls", "Calls made since start", self.client.calls_done)
        families = {
            "limit": GaugeMetricFamily("notifyagent_target_limit", "Calls a target may have at once (AIMD)", labels=["target"]),
            "running": GaugeMetricFamily("notifyagent_target_in_flight", "Calls running to a target", labels=["target"]),
            "waiting": GaugeMetricFamily("notifyagent_target_waiting", "Calls waiting for a target's limit or backoff", labels=["target"]),
            "backoff_s": GaugeMetricFamily("notifyagent_target_backoff_seconds", "Left of a target's backoff", labels=["target"]),
        }  # fmt: skip
        for state in self.hosts.snapshot():  # only targets that are limited, backing off or busy
            for name, family in families.items():
                family.add_metric([state.key], getattr(state, name))
        yield from families.values()


def _either(local: Callable[[str], Transport | None], remote: Transport) -> Transport:
    def open_call(addr: str):
        return (local(addr) or remote)(addr)

    return open_call


def _log_if_failed(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("lease client died; this dispatcher takes no more work: %r", task.exception())
