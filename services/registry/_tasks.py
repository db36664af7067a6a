"""Small asyncio helpers shared by the adapters: a heartbeat loop and a stoppable wait."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .base import RegistryError, WatcherStopped

log = logging.getLogger(__name__)

T = TypeVar("T")


class Heartbeat:
    """Calls ``beat()`` every ``interval`` seconds (jittered 0-10 % early) until stopped.

    A failing beat is logged and tried again on the next tick; it never ends
    the loop. ``stop()`` cancels at once, even in the middle of a beat.
    """

    def __init__(self, beat: Callable[[], Awaitable[None]], *, interval: float, name: str) -> None:
        self._beat = beat
        self._interval = interval
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})  # does not raise the task's CancelledError

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval * random.uniform(0.9, 1.0))
            try:
                await self._beat()
            except Exception:
                log.warning("%s failed; trying again in %.1fs", self._name, self._interval, exc_info=True)


async def until_stopped(work: Awaitable[T], stopped: asyncio.Event) -> T:
    """Await ``work`` unless ``stopped`` is set first: then cancel it and raise WatcherStopped."""
    if stopped.is_set():
        if asyncio.iscoroutine(work):
            work.close()
        raise WatcherStopped("watcher stopped")
    work_task = asyncio.ensure_future(work)
    stop_task = asyncio.create_task(stopped.wait())
    try:
        await asyncio.wait({work_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_task.cancel()
        if not work_task.done():
            work_task.cancel()
            await asyncio.wait({work_task})
    if work_task.cancelled() or not work_task.done():
        raise WatcherStopped("watcher stopped")
    return work_task.result()


class Holdings:
    """What one registry handle started and must end when it closes: a heartbeat per
    registered node and its watchers. Shared by the adapters."""

    def __init__(self) -> None:
        self.heartbeats: dict[tuple[str, str], Heartbeat] = {}
        self.watchers: list = []
        self.closed = False

    def check_open(self) -> None:
        if self.closed:
            raise RegistryError("registry is closed")

    async def start_heartbeat(self, key: tuple[str, str], beat: Callable[[], Awaitable[None]], *, interval: float, name: str) -> None:
        """Keeps `key` alive with `beat`, replacing a heartbeat it had."""
        await self.stop_heartbeat(key)
        heartbeat = Heartbeat(beat, interval=interval, name=name)
        self.heartbeats[key] = heartbeat
        heartbeat.start()

    async def stop_heartbeat(self, key: tuple[str, str]) -> None:
        if (heartbeat := self.heartbeats.pop(key, None)) is not None:
            await heartbeat.stop()

    async def close(self, deregister: Callable[[str, str], Awaitable[None]]) -> bool:
        """Stops watchers, deregisters what was registered; False if already closed."""
        if self.closed:
            return False
        self.closed = True
        for watcher in self.watchers:
            watcher.stop()
        for service_name, node_id in list(self.heartbeats):
            try:
                await deregister(service_name, node_id)
            except RegistryError as exc:
                log.warning("could not deregister %s/%s on close: %s", service_name, node_id, exc)
        return True
