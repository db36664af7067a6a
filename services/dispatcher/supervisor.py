"""Supervisor: `notifyagent dispatcher --processes N` keeps N dispatcher worker processes running.

Each worker is a plain `notifyagent dispatcher` with its own dispatcher id and
Lease stream, started with the parent's settings in its environment (one
process, no HTTP address, no recycling of its own) and a pipe on which it
reports `ready` once connected and its call count (worker.py).

- A worker that dies is started again, after a backoff that doubles from
  0.25 s to 30 s and starts over once a worker has lived STABLE_S.
- A worker past NOTIFY_RECYCLE_CALLS calls, NOTIFY_RECYCLE_MEMORY_MB of
  resident memory (VmRSS in /proc/<pid>/status), NOTIFY_RECYCLE_SECONDS of
  run time or NOTIFY_RECYCLE_IDLE_SECONDS without a call (none made, none
  running) is recycled: its replacement
  starts first; once that one is connected (or READY_TIMEOUT_S passed) the old
  one gets SIGTERM, takes no more work, finishes and reports its calls, exits.
- reload() takes new settings: thresholds at once, the number of processes by
  starting or retiring workers, everything else by recycling every worker.
- stop(): SIGTERM to every worker, up to the grace period (plus STOP_SLACK_S)
  for them to finish, SIGKILL for any still running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field, fields, replace

from ..common.config import Settings, env_name
from ..common.web import OpsServer, gauge
from .worker import LINK_ENV, SLOT_ENV

log = logging.getLogger(__name__)
WATCH_S = 0.25
STABLE_S = 30.0
RESTART_BACKOFF_S = (0.25, 30.0)
READY_TIMEOUT_S = 20.0
STOP_SLACK_S = 5.0
RECYCLE = ("recycle_calls", "recycle_memory_mb", "recycle_seconds", "recycle_idle_seconds")
_PARENT_ONLY = frozenset({"http_addr", "processes", *RECYCLE, "config"})  # workers never see these


@dataclass(eq=False)
class Worker:
    slot: int
    proc: asyncio.subprocess.Process
    generation: int  # the settings it was started with
    started: float = field(default_factory=time.monotonic)
    calls: int = 0
    running: int = 0  # calls in flight at its last report
    last_busy: float = field(default_factory=time.monotonic)  # when it last made a call or had one running
    dispatcher_id: str = ""
    retiring: bool = False  # we sent SIGTERM: its exit is expected
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pid(self) -> int:
        return self.proc.pid


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MiB (Linux), None when unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with {code}"


class Supervisor:
    # What reload() applies: workers take every setting by being replaced; only
    # the parent's own HTTP address needs a restart.
    live = frozenset(f.name for f in fields(Settings)) - {"http_addr", "config"}

    def __init__(self, settings: Settings, *, command: list[str] | None = None) -> None:
        self.settings = settings
        self._command = command or [sys.executable, "-m", "notifyagent", "dispatcher"]
        self._generation = 0
        self._slots: dict[int, asyncio.Task] = {}
        self.workers: set[Worker] = set()  # every live worker process, retiring ones too
        self._tasks: set[asyncio.Task] = set()
        self._stopping = asyncio.Event()
        self._stopped = False
        self._ops: OpsServer | None = None
        self.restarts = 0
        self.recycles = 0

    async def start(self) -> None:
        self._scale()
        if self.settings.http_addr:
            self._ops = OpsServer(self.settings.http_addr, healthy=lambda: not self._stopped, collect=self._metrics)
            await self._ops.start()
        log.info("supervisor (pid %d) running %d dispatcher workers", os.getpid(), self.settings.processes)

    async def stop(self) -> None:
        """SIGTERM every worker, wait for them (grace + slack), SIGKILL the rest. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self._slots:  # each slot sees the stop at its next wait and spawns nothing more
            await asyncio.wait(self._slots.values(), timeout=2.0)
        for task in self._slots.values():
            task.cancel()
        for w in list(self.workers):
            self._retire(w)
        waits = [asyncio.ensure_future(w.exited.wait()) for w in self.workers]
        if waits:
            await asyncio.wait(waits, timeout=self.settings.grace + STOP_SLACK_S)
        for w in list(self.workers):
            self._kill_if_running(w)
        await asyncio.gather(*self._slots.values(), *self._tasks, return_exceptions=True)
        if self._ops is not None:
            await self._ops.stop()
        log.info("supervisor stopped (%d restarts, %d recycles)", self.restarts, self.recycles)

    async def reload(self, settings: Settings) -> list[str]:
        """Applies the `live` settings that changed; returns what it did, for the log."""
        changed = [name for name in sorted(self.live) if getattr(settings, name) != getattr(self.settings, name)]
        old, self.settings = self.settings, replace(self.settings, **{name: getattr(settings, name) for name in changed})
        changes = []
        if old.processes != settings.processes:
            changes.append(f"{'starting' if settings.processes > old.processes else 'stopping'} workers: "
                           f"{old.processes} -> {settings.processes}")  # fmt: skip
        if any(name not in _PARENT_ONLY for name in changed):
            self._generation += 1  # every slot recycles its worker with the new settings
            changes.append("replacing every worker with the new settings, each new process before its old one stops")
        self._scale()
        return changes

    # --- one slot -------------------------------------------------------

    def _scale(self) -> None:
        for slot in range(self.settings.processes):
            if slot not in self._slots or self._slots[slot].done():
                task = self._slots[slot] = asyncio.create_task(self._keep(slot), name=f"worker-slot-{slot}")
                task.add_done_callback(_log_if_failed)

    async def _keep(self, slot: int) -> None:
        """Keeps one worker running in this slot until stop() or the slot is no longer wanted."""
        failures = 0
        worker = await self._spawn(slot)
        while not self._stopping.is_set():
            why = await self._watch(worker)
            if self._stopping.is_set():
                return
            if worker.exited.is_set():
                lived = time.monotonic() - worker.started
                failures = 0 if lived >= STABLE_S else failures + 1
                delay = min(RESTART_BACKOFF_S[1], RESTART_BACKOFF_S[0] * 2 ** (failures - 1)) if failures else 0.0
                log.warning("worker %d (pid %d) %s after %.1f s and %d calls; starting another in %.2f s",
                            slot, worker.pid, describe_exit(worker.proc.returncode), lived, worker.calls, delay)  # fmt: skip
                self.restarts += 1
                if await self._sleep(delay):
                    return
                worker = await self._spawn(slot)
                continue
            if slot >= self.settings.processes:
                log.info("worker %d (pid %d) is no longer wanted (%d processes); stopping it", slot, worker.pid, self.settings.processes)
                self._retire(worker)
                return
            replacement = await self._spawn(slot)
            await _first(READY_TIMEOUT_S, replacement.ready, replacement.exited, self._stopping)
            if replacement.exited.is_set():
                log.warning("replacement for worker %d %s; keeping pid %d", slot, describe_exit(replacement.proc.returncode), worker.pid)
                failures += 1
                if await self._sleep(min(RESTART_BACKOFF_S[1], RESTART_BACKOFF_S[0] * 2 ** failures)):
                    return
                continue
            log.info("worker %d: recycling pid %d (%s); pid %d takes over", slot, worker.pid, why, replacement.pid)
            self.recycles += 1
            self._retire(worker)
            worker = replacement

    async def _watch(self, worker: Worker) -> str:
        """Returns when the worker exited (""), or why it should be recycled."""
        while True:
            await _first(WATCH_S, worker.exited, self._stopping)
            s = self.settings  # a reload may have changed the thresholds
            if worker.exited.is_set() or self._stopping.is_set() or worker.slot >= s.processes:
                return ""
            if worker.generation != self._generation:
                return "settings reloaded"
            if s.recycle_calls and worker.calls >= s.recycle_calls:
                return f"{worker.calls} calls, NOTIFY_RECYCLE_CALLS={s.recycle_calls}"
            now = time.monotonic()
            if s.recycle_seconds and now - worker.started >= s.recycle_seconds:
                return f"ran {now - worker.started:.0f} s, NOTIFY_RECYCLE_SECONDS={s.recycle_seconds:g}"
            if s.recycle_idle_seconds and worker.ready.is_set() and now - worker.last_busy >= s.recycle_idle_seconds:
                return f"idle {now - worker.last_busy:.0f} s, NOTIFY_RECYCLE_IDLE_SECONDS={s.recycle_idle_seconds:g}"
            if s.recycle_memory_mb:
                mb = rss_mb(worker.pid)
                if mb is not None and mb > s.recycle_memory_mb:
                    return f"{mb:.0f} MiB resident, NOTIFY_RECYCLE_MEMORY_MB={s.recycle_memory_mb}"

    async def _sleep(self, seconds: float) -> bool:
        """Sleeps; True if stop() came first."""
        await _first(seconds, self._stopping)
        return self._stopping.is_set()

    # --- processes ------------------------------------------------------

    async def _spawn(self, slot: int) -> Worker:
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(*self._command, env=self._worker_env(write_fd, slot), pass_fds=(write_fd,))
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        worker = Worker(slot, proc, self._generation)
        self.workers.add(worker)
        for job in (self._read_reports(worker, read_fd), self._reap(worker)):
            task = asyncio.create_task(job)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        log.info("worker %d started (pid %d)", slot, proc.pid)
        return worker

    def _worker_env(self, link_fd: int, slot: int) -> dict[str, str]:
        one = replace(self.settings, processes=1, http_addr="", config="", **{name: type(getattr(self.settings, name))(0) for name in RECYCLE})
        env = {**os.environ, **{env_name(f.name): str(getattr(one, f.name)) for f in fields(Settings)}}
        env[LINK_ENV] = str(link_fd)
        env[SLOT_ENV] = str(slot)
        return env

    async def _read_reports(self, worker: Worker, fd: int) -> None:
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0))
        try:
            async for line in reader:
                kind, _, value = line.decode(errors="replace").strip().partition(" ")
                if kind == "ready":
                    worker.dispatcher_id = value
                    worker.ready.set()
                    log.info("worker %d (pid %d) connected as %s", worker.slot, worker.pid, value)
                elif kind == "calls" and value.isdigit():
                    if int(value) != worker.calls:
                        worker.last_busy = time.monotonic()
                    worker.calls = int(value)
                elif kind == "running" and value.isdigit():
                    worker.running = int(value)
                    if worker.running:
                        worker.last_busy = time.monotonic()
        finally:
            transport.close()

    async def _reap(self, worker: Worker) -> None:
        await worker.proc.wait()
        self.workers.discard(worker)
        worker.exited.set()
        if worker.retiring and worker.proc.returncode == -signal.SIGTERM:
            # Our SIGTERM found the default handler: the worker was still starting and had taken no work.
            log.info("worker %d (pid %d) stopped by SIGTERM while starting, before it took work", worker.slot, worker.pid)
        elif worker.retiring:
            log.info("worker %d (pid %d) %s after %d calls", worker.slot, worker.pid,
                     describe_exit(worker.proc.returncode), worker.calls)  # fmt: skip

    def _retire(self, worker: Worker) -> None:
        """One SIGTERM (a second could land after the worker dropped its handlers); SIGKILL if it outlives its grace."""
        if not worker.retiring and worker.proc.returncode is None:
            worker.proc.send_signal(signal.SIGTERM)
            asyncio.get_running_loop().call_later(self.settings.grace + STOP_SLACK_S, self._kill_if_running, worker)
        worker.retiring = True

    def _kill_if_running(self, worker: Worker) -> None:
        if worker.proc.returncode is None:
            log.warning("worker %d (pid %d) did not stop within the grace period; killing it", worker.slot, worker.pid)
            worker.proc.kill()

    def _metrics(self):
        yield gauge("notifyagent_supervisor_workers", "Worker processes running (retiring ones too)", len(self.workers))
        yield gauge("notifyagent_supervisor_restarts", "Workers started again after dying", self.restarts)
        yield gauge("notifyagent_supervisor_recycles", "Workers replaced for calls, memory or new settings", self.recycles)
        yield gauge("notifyagent_supervisor_worker_calls", "Calls made by the workers running now",
                    sum(w.calls for w in self.workers))  # fmt: skip


async def _first(timeout: float, *events: asyncio.Event) -> None:
    """Waits until one of the events is set, or timeout seconds."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def _log_if_failed(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed; that slot runs no worker until the next reload: %r", task.get_name(), task.exception())
