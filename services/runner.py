"""Runs the services: `dev` (all in one), `scheduler`, `dispatcher` (alone, or N worker
processes under a supervisor) until SIGTERM or SIGINT. This module parses nothing of
a role and wires nothing: it picks the role's app (dev.py, scheduler/app.py,
dispatcher/app.py or the supervisor), runs it and handles signals.

SIGUSR1 restarts the process in place: it stops as on SIGTERM (takes no more
work, finishes what is in flight), then executes its own command line again,
so the pid stays and nothing is lost or done twice.

SIGHUP reloads the settings: flags, NOTIFY_* variables and the config file are
read again and each changed setting is logged. What can change while running
is applied: log level and format here, the app's `live` settings by its
`reload()` (which returns what it did, for the log). The others are logged as
needing a restart and ignored.

An app here has start(), stop(), `async reload(settings) -> list[str]` and
`live` (the names of the settings its reload applies).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from dataclasses import fields, replace
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import setproctitle

from .common import logs
from .common.config import ROLE_DEFAULTS, ConfigError, Settings, load
from .dev import DevApp
from .dispatcher.app import DispatcherApp
from .dispatcher.guard import NetworkPolicy
from .dispatcher.signing import parse_secret
from .dispatcher.supervisor import RECYCLE, Supervisor
from .dispatcher.worker import SLOT_ENV, link_fd, report_to_supervisor
from .registry import Registry, from_url
from .scheduler.app import SchedulerApp

log = logging.getLogger(__name__)
_LOGGING = frozenset({"log_format", "log_level", "log_file"})


def check(role: str, settings: Settings) -> Registry:
    """Checks what only a role's code can parse, before anything starts: raises ConfigError naming the
    setting. Returns the registry it built from NOTIFY_REGISTRY, for the app to use (built once)."""
    registry = _registry(settings)
    if role == "dispatcher" and settings.registry.strip() == "memory":
        raise ConfigError("a dispatcher alone cannot find a scheduler with NOTIFY_REGISTRY=memory (that is one "
                          "process's own); set NOTIFY_REGISTRY=static:HOST:PORT (the scheduler's gRPC address) "
                          "or consul://HOST:PORT")  # fmt: skip
    if role in ("dev", "dispatcher"):
        try:
            NetworkPolicy.from_csv(settings.allow_networks)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if settings.signing_secret:
            try:
                parse_secret(settings.signing_secret)
            except ValueError as e:
                raise ConfigError(f"NOTIFY_SIGNING_SECRET: {e}") from None
    if role in ("dev", "scheduler"):
        SchedulerApp.check_settings(settings)
    return registry


def _registry(settings: Settings) -> Registry:
    try:
        return from_url(settings.registry)
    except ValueError as e:
        raise ConfigError(str(e)) from None


class _Single:
    def __init__(self, app_cls, settings: Settings, registry: Registry) -> None:
        self.registry = registry
        self.app = app_cls(settings, registry=self.registry)
        self.live = app_cls.LIVE_SETTINGS

    async def start(self) -> None:
        await self.app.start()

    async def stop(self) -> None:
        await self.app.stop()
        await self.registry.close()

    async def reload(self, settings: Settings) -> list[str]:
        return await self.app.reload(settings)

    def reread_files(self) -> list[str]:
        return self.app.reread_files()


class _Worker(_Single):
    """A dispatcher under a supervisor: reports to it, and stops if the supervisor is gone."""

    def __init__(self, settings: Settings, registry: Registry, fd: int, request_stop: Callable[[], None]) -> None:
        super().__init__(DispatcherApp, settings, registry)
        self._fd = fd
        self._request_stop = request_stop
        self._report: asyncio.Task | None = None
        self.keep_link = False  # restarting in place: the pipe to the supervisor stays open across exec

    async def start(self) -> None:
        await super().start()
        self._report = asyncio.create_task(report_to_supervisor(
            self._fd, self.app.client, orphaned=self._request_stop, keep_fd=lambda: self.keep_link))

    async def stop(self) -> None:
        await super().stop()
        if self._report is not None:
            self._report.cancel()
            await asyncio.gather(self._report, return_exceptions=True)


def build(role: str, settings: Settings, *, request_stop: Callable[[], None] = lambda: None):
    registry = check(role, settings)
    if role == "dev":
        app = DevApp(settings, registry=registry)
        app.scheduler.on_shutdown = request_stop  # AdminService.Shutdown
        return app
    if role == "scheduler":
        app = _Single(SchedulerApp, settings, registry)
        app.app.on_shutdown = request_stop
        return app
    fd = link_fd()
    if fd is not None:
        return _Worker(settings, registry, fd, request_stop)
    if settings.processes > 1 or any(getattr(settings, name) for name in RECYCLE):
        return Supervisor(settings)  # its workers build their own
    return _Single(DispatcherApp, settings, registry)


async def reload_settings(role: str, app, current: Settings, flags: Mapping[str, Any] | None) -> Settings:
    """SIGHUP: reads the settings again, applies what it can, returns the settings now in force."""
    try:
        if flags is not None:
            new = load(flags, **ROLE_DEFAULTS.get(role, {}))
        else:  # flags unknown (a caller of run() without them): the file and environment over what is in force
            new = load({"config": current.config}, **{f.name: getattr(current, f.name) for f in fields(Settings)})
    except ConfigError as e:
        log.error("SIGHUP: keeping the current settings: %s", e)
        return current
    changed = [f.name for f in fields(Settings) if getattr(new, f.name) != getattr(current, f.name)]
    if not changed:
        log.info("SIGHUP: settings read again; nothing changed")
        return current
    live = _LOGGING | app.live
    try:
        changes = await app.reload(new) if any(name in app.live for name in changed) else []
    except Exception as e:  # e.g. a malformed queue limit: nothing applied, nothing lost
        log.error("SIGHUP: keeping the current settings: %s", e, exc_info=not isinstance(e, ConfigError))
        return current
    if any(name in _LOGGING for name in changed):
        logs.configure(new.log_format, new.log_level, file=new.log_file)
    for name in changed:
        before, after = _shown(name, getattr(current, name)), _shown(name, getattr(new, name))
        if name in live:
            log.info("SIGHUP: %s changed: %s -> %s", name, before, after)
        else:
            log.warning("SIGHUP: %s changed (%s -> %s) but needs a restart; ignored", name, before, after)
    for change in changes:
        log.info("SIGHUP: %s", change)
    return replace(current, **{name: getattr(new, name) for name in changed if name in live})


def _shown(name: str, value: Any) -> str:
    if name in ("signing_secret", "token", "secret_key") and value:
        return "'***'"
    if name == "store" and urlsplit(str(value)).password:
        return repr(str(value).replace(f":{urlsplit(str(value)).password}@", ":***@"))
    return repr(value)


def title(role: str, app, settings: Settings) -> str:
    """The process title `ps` shows: the role, and which worker or address."""
    if isinstance(app, _Worker):
        return f"notifyagent dispatcher worker {os.environ.get(SLOT_ENV, '?')} (supervisor {os.getppid()}) {app.app.client.dispatcher_id}"
    if isinstance(app, Supervisor):
        return f"notifyagent dispatcher supervisor ({settings.processes} workers)"
    if role == "dispatcher":
        return f"notifyagent dispatcher {app.app.client.dispatcher_id}"
    return f"notifyagent {role} {settings.grpc_addr}"


async def serve(role: str, settings: Settings, flags: Mapping[str, Any] | None = None) -> bool:
    """Runs until SIGTERM, SIGINT or Shutdown; True when SIGUSR1 asked for a restart in place."""
    stop = asyncio.Event()
    app = build(role, settings, request_stop=stop.set)
    setproctitle.setproctitle(title(role, app, settings))
    restart = False
    current = settings
    reloading = asyncio.Lock()  # one SIGHUP at a time, in order
    reloads: set[asyncio.Task] = set()

    async def reload() -> None:
        nonlocal current
        async with reloading:
            try:
                current = await reload_settings(role, app, current, flags)
                for change in getattr(app, "reread_files", list)():  # tokens and certificates, even if no setting changed
                    log.info("SIGHUP: %s", change)
            except Exception:  # a bug in reloading must not take the process down
                log.exception("SIGHUP: reloading failed; the current settings stay")

    def hangup() -> None:
        task = asyncio.create_task(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    def restart_in_place() -> None:
        nonlocal restart
        if not restart:
            log.info("SIGUSR1: restarting in place; taking no more work, finishing what is in flight (grace %.0f s)",
                     current.grace)  # fmt: skip
        restart = True
        if isinstance(app, _Worker):
            app.keep_link = True
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hangup)
    loop.add_signal_handler(signal.SIGUSR1, restart_in_place)
    try:
        try:
            await app.start()
        except BaseException:
            await app.stop()
            raise
        settle_gc()
        await stop.wait()
        log.info("stopping (grace %.0f s)", current.grace)
        await asyncio.gather(*reloads, return_exceptions=True)
        await app.stop()
        return restart
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            loop.remove_signal_handler(sig)


def run(role: str, settings: Settings, flags: Mapping[str, Any] | None = None) -> None:
    """flags: the command line's settings (as given to config.load), kept so SIGHUP reads
    flags, environment and file again in their order of precedence."""
    try:
        logs.configure(settings.log_format, settings.log_level, file=settings.log_file)
    except OSError as e:
        raise SystemExit(f"NOTIFY_LOG_FILE: cannot write {settings.log_file}: {e.strerror}") from None
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # until the loop takes it: an early SIGUSR1 must not kill
    signal.signal(signal.SIGTERM, _stop_before_start)  # e.g. a worker retired while it was starting
    runner = asyncio.run
    if settings.event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if settings.event_loop == "uvloop":
                raise ConfigError("NOTIFY_EVENT_LOOP=uvloop but uvloop is not installed: pip install uvloop, or use asyncio")
        else:
            runner = uvloop.run
    if runner(serve(role, settings, flags)):
        exec_self()


GC_THRESHOLD = (10_000, 10, 10)


def settle_gc() -> None:
    """Once started: what startup made (modules, protobuf descriptors, grpc, settings) is moved out of
    the collector's reach, and the youngest generation is collected every 10,000 allocations instead of
    700. Unary CreateNotify spent ~31 us per call in the collector (a full pass over ~55,000 startup
    objects every few thousand calls), ~5 us after this."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def _stop_before_start(signum, frame) -> None:
    raise SystemExit(0)  # nothing taken yet, nothing to finish


def exec_self() -> None:
    """Replaces this process by a fresh run of the same command line: same pid, new code and settings."""
    argv = [sys.executable, *sys.orig_argv[1:]]
    log.info("SIGUSR1: everything in flight finished; starting again in place (pid %d)", os.getpid())  # argv may hold secrets
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)
