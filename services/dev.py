"""The `dev` role's composition root: the scheduler and one dispatcher in one process.

The dispatcher finds the scheduler through the registry and talks the same
lease protocol a separate dispatcher process would: the same LeaseRequest and
LeaseResponse messages through the scheduler's own Lease handler, carried in
memory rather than over gRPC (local_lease.py); any other scheduler it finds
(a shared PostgreSQL store) it reaches over gRPC."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from prometheus_client import CollectorRegistry

from .common import auth
from .common.auth import call_metadata
from .common.config import ConfigError, Settings
from .dispatcher.app import DispatcherApp
from .dispatcher.stream import Transport
from .local_lease import local_transport
from .registry import Registry
from .scheduler.app import SchedulerApp

log = logging.getLogger(__name__)


class DevApp:
    live = SchedulerApp.LIVE_SETTINGS | DispatcherApp.LIVE_SETTINGS

    def __init__(self, settings: Settings, *, registry: Registry) -> None:
        self.settings = settings
        if settings.tls_cert and not settings.tls_ca:
            raise ConfigError("dev with NOTIFY_TLS_CERT needs NOTIFY_TLS_CA too: its own dispatcher verifies the scheduler with it")
        self.registry = registry
        metrics = CollectorRegistry(auto_describe=False)  # one /metrics for both
        self.scheduler = SchedulerApp(settings, registry=self.registry, metrics=metrics)
        # With tokens on, its own dispatcher holds a token of this process's, not one from the file.
        own = settings.token or self.scheduler.auth.internal("dev-dispatcher", frozenset({"dispatcher"}))
        self.dispatcher = DispatcherApp(replace(settings, http_addr="", token=own), registry=self.registry, metrics=metrics,
                                        local=self._local_transport)  # fmt: skip
        self._own_metadata = call_metadata(own)

    def _local_transport(self, addr: str) -> Transport | None:
        """In memory for this process's own scheduler; None (gRPC) for any other."""
        s = self.scheduler
        if s.dispatch is None or addr != s.registered_address:
            return None
        return local_transport(s.dispatch.Lease, lambda md: s.auth.authorize(md, auth.LEASE_METHOD), self._own_metadata,
                               self.settings.max_message_bytes)  # fmt: skip

    async def start(self) -> None:
        await self.scheduler.start()
        await self.dispatcher.start()
        http = f", HTTP/JSON on http://{self.scheduler.http_address}" if self.scheduler.http_address else ""
        log.info("NotifyAgent dev: gRPC on %s%s, store %s; Ctrl-C stops", self.scheduler.address, http, self.settings.store)

    async def stop(self) -> None:
        """The dispatcher finishes its calls while the scheduler waits for their results."""
        await asyncio.gather(self.dispatcher.stop(), self.scheduler.drain())
        await self.scheduler.stop()
        await self.registry.close()

    async def reload(self, settings: Settings) -> list[str]:
        return [*await self.scheduler.reload(settings), *await self.dispatcher.reload(replace(settings, http_addr=""))]

    def reread_files(self) -> list[str]:
        """SIGHUP: the scheduler's tokens and certificate files (the dispatcher reads its own on each connect)."""
        return self.scheduler.reread_files()
