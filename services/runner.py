"""Runs the services: `dev` (all in one), `scheduler`, `dispatcher`, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from .common import logs
from .common.config import Settings
from .dispatcher.app import DispatcherApp
from .registry import from_url
from .scheduler.app import SchedulerApp

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.0/8,::1/128"


class DevApp:
    """Scheduler and one dispatcher in one process; the dispatcher finds the
    scheduler through the in-memory registry and talks the same lease protocol."""

    def __init__(self, settings: Settings) -> None:
        self.registry = from_url(settings.registry)
        self.scheduler = SchedulerApp(settings, registry=self.registry)
        self.dispatcher = DispatcherApp(
            Settings(**{**settings.__dict__, "http_addr": ""}), registry=self.registry
        )

    async def start(self) -> None:
        await self.scheduler.start()
        await self.dispatcher.start()

    async def stop(self) -> None:
        await asyncio.gather(self.dispatcher.stop(), self.scheduler.engine.drain(self.scheduler.settings.grace))
        await self.scheduler.stop()
        await self.registry.close()


class _Single:
    def __init__(self, app_cls, settings: Settings) -> None:
        self.registry = from_url(settings.registry)
        self.app = app_cls(settings, registry=self.registry)

    async def start(self) -> None:
        await self.app.start()

    async def stop(self) -> None:
        await self.app.stop()
        await self.registry.close()


def build(role: str, settings: Settings):
    if role == "dev":
        return DevApp(settings)
    if role == "scheduler":
        return _Single(SchedulerApp, settings)
    return _Single(DispatcherApp, settings)


async def serve(role: str, settings: Settings) -> None:
    app = build(role, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await app.start()
    except BaseException:
        await app.stop()
        raise
    if role == "dev":
        log.info("NotifyAgent dev: gRPC on %s, store %s; Ctrl-C stops", app.scheduler.address, settings.store)
    await stop.wait()
    log.info("stopping (grace %.0f s)", settings.grace)
    await app.stop()


def run(role: str, settings: Settings) -> None:
    logs.configure(settings.log_format, settings.log_level)
    asyncio.run(serve(role, settings))
