"""Test helpers: a real HTTP target, the system in-process on free ports, the system as processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc

from notifyagent.common.config import Settings
from notifyagent.registry import MemoryRegistry
from notifyagent.runner import LOOPBACK
from notifyagent.dispatcher.app import DispatcherApp
from notifyagent.scheduler.app import SchedulerApp
from notifyagent.scheduler.engine.model import Request, Spec
from notifyagent.scheduler.engine.clock import FakeClock  # noqa: F401  (engine-level tests use it from here)
from notifyagent.scheduler.engine.sessions import Grant
from notifyagent.v1 import admin_service_pb2_grpc, notify_pb2 as pb, notify_service_pb2 as api, notify_service_pb2_grpc


@dataclass
class Received:
    at: float
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Target:
    """A real aiohttp server on 127.0.0.1 that records every request it gets.

    Answers come from `script[path]`: a list of (status, delay_s) consumed in
    order (the last repeats), default 200 at once."""

    received: list[Received] = field(default_factory=list)
    script: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    in_flight_by_path: dict[str, int] = field(default_factory=dict)
    peak_by_path: dict[str, int] = field(default_factory=dict)
    port: int = 0
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def respond(self, path: str, *answers: int | tuple[int, float]) -> None:
        self.script[path] = [a if isinstance(a, tuple) else (a, 0.0) for a in answers]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)  # stop cancels slow answers
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        at = time.time()
        body = await request.read()
        self.received.append(Received(at, request.method, request.path, dict(request.query), dict(request.headers), body))
        self._arrived.set()
        answers = self.script.get(request.path, [(200, 0.0)])
        status, delay = answers.pop(0) if len(answers) > 1 else answers[0]
        path = request.path
        self.in_flight += 1
        self.in_flight_by_path[path] = self.in_flight_by_path.get(path, 0) + 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.peak_by_path[path] = max(self.peak_by_path.get(path, 0), self.in_flight_by_path[path])
        try:
            if delay:
                await asyncio.sleep(delay)
        finally:
            self.in_flight -= 1
            self.in_flight_by_path[path] -= 1
        return web.Response(status=status, text=f"answer {status}")

    def ids(self) -> list[str]:
        return [r.headers.get("Notify-Id", "") for r in self.received]

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"target got {len(self.received)} requests, expected {count}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                pass
        return self.received


def settings_for(tmp_path: Path, **changes) -> Settings:
    base = dict(
        grpc_addr="127.0.0.1:0", http_addr="", store=f"sqlite:///{tmp_path}/notify.db", registry="memory",
        allow_networks=LOOPBACK, grace=3.0, capacity=64, lease_margin=1.0,
    )  # fmt: skip
    base.update(changes)
    return Settings(**base)


class System:
    """Scheduler and dispatcher in this process, on free ports, talking gRPC; a client stub."""

    def __init__(self, settings: Settings, *, dispatchers: int = 1) -> None:
        self.settings = settings
        self.registry = MemoryRegistry()
        self.scheduler = SchedulerApp(settings, registry=self.registry)
        self.dispatchers = [DispatcherApp(settings, registry=self.registry) for _ in range(dispatchers)]
        self.channel: grpc.aio.Channel | None = None

    async def start(self) -> None:
        await self.scheduler.start()
        for d in self.dispatchers:
            await d.start()
        for d in self.dispatchers:
            await d.client.wait_connected(10)
        self.channel = grpc.aio.insecure_channel(self.scheduler.address)
        self.api = notify_service_pb2_grpc.NotifyServiceStub(self.channel)
        self.admin = admin_service_pb2_grpc.AdminServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    async def stop(self) -> None:
        for d in self.dispatchers:
            await d.stop()
        await self.scheduler.stop()
        if self.channel:
            await self.channel.close()
        await self.registry.close()

    async def create(self, url: str, request_id: str = "", **fields) -> pb.Notify:
        request = fields.pop("request", None) or pb.HttpRequest(method=pb.HTTP_METHOD_POST, url=url)
        resp = await self.api.CreateNotify(api.CreateNotifyRequest(notify=pb.Notify(request=request, **fields), request_id=request_id))
        return resp.notify

    async def get(self, notify_id: str) -> pb.Notify:
        return (await self.api.GetNotify(api.GetNotifyRequest(id=notify_id))).notify

    async def wait_state(self, notify_id: str, state: int, timeout: float = 10.0) -> pb.Notify:
        deadline = time.monotonic() + timeout
        while True:
            n = await self.get(notify_id)
            if n.state == state:
                return n
            if time.monotonic() > deadline:
                raise AssertionError(f"notify {notify_id} is {pb.State.Name(n.state)}, expected {pb.State.Name(state)}")
            await asyncio.sleep(0.02)

    async def serving(self) -> bool:
        resp = await self.health.Check(health_pb2.HealthCheckRequest(service=""))
        return resp.status == health_pb2.HealthCheckResponse.SERVING


def fast_retry(max_attempts: int = 5, backoff: float = 0.05) -> pb.RetryPolicy:
    p = pb.RetryPolicy(max_attempts=max_attempts, multiplier=1.0)
    p.min_backoff.FromNanoseconds(int(backoff * 1e9))
    p.max_backoff.FromNanoseconds(int(backoff * 1e9))
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A `notifyagent` subcommand as a real process, logs to a file."""

    def __init__(self, args: list[str], *, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.popen: subprocess.Popen | None = None

    def start(self) -> "Proc":
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "notifyagent", *self.args], stdout=log, stderr=log, env=self.env
            )
        return self

    def kill(self) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        if self.popen:
            self.popen.wait(10)

    def terminate(self, timeout: float = 20) -> int:
        assert self.popen
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def wait_serving(addr: str, timeout: float = 15.0, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                resp = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if proc and proc.popen and proc.popen.poll() is not None:
                raise AssertionError(f"process exited with {proc.popen.returncode}:\n{proc.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing serving on {addr} after {timeout} s" + (f":\n{proc.log()}" if proc else ""))
            await asyncio.sleep(0.1)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --- engine-level tests: no servers, a clock the test moves -------------------

T0 = 1_700_000_000_000


def spec(**fields) -> Spec:
    return Spec(request=Request(method="POST", url="https://example.com/hook"), **fields)


def granted_leases(session) -> list:
    """Takes the grants waiting in a session's outbox (what its stream would send)."""
    return [item.lease for item in session.take() or () if isinstance(item, Grant)]
