"""Test helpers: a real HTTP target, the system in-process on free ports, the system as processes."""

from __future__ import annotations

import asyncio
import datetime
import functools
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc

from notifyagent.common import auth
from notifyagent.common.config import Settings
from notifyagent.common.grpcutil import message_options
from notifyagent.registry import MemoryRegistry
from notifyagent.common.config import LOOPBACK
from notifyagent.dispatcher.app import DispatcherApp
from notifyagent.scheduler.app import SchedulerApp
from notifyagent.scheduler.api import convert
from notifyagent.scheduler.engine.model import Notification, Request, Spec, State
from notifyagent.scheduler.engine.clock import FakeClock  # noqa: F401  (engine-level tests use it from here)
from notifyagent.scheduler.engine.sessions import Grant
from notifyagent.scheduler.store import codec
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
    """Scheduler and dispatcher in this process, on free ports, talking gRPC; a client stub.

    With auth on (settings from Trust.settings), `token` is what the test's stubs send;
    the dispatchers send settings.token."""

    def __init__(self, settings: Settings, *, dispatchers: int = 1, token: str = "") -> None:
        self.settings = settings
        self.token = token
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
        self._open_clients()

    def _open_clients(self) -> None:
        self.channel = open_channel(self.scheduler.address, self.token, credentials=tls_client(self.settings),
                                    max_message_bytes=self.settings.max_message_bytes)
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


class DevSystem(System):
    """`notifyagent dev` in this process (DevApp: its dispatcher streams to its scheduler in
    memory), with System's helpers: `scheduler`, `dispatchers` (its one), stubs."""

    def __init__(self, settings: Settings, *, token: str = "") -> None:
        from notifyagent.dev import DevApp

        self.settings = settings
        self.token = token
        self.dev = DevApp(settings, registry=MemoryRegistry())
        self.registry = self.dev.registry
        self.scheduler = self.dev.scheduler
        self.dispatchers = [self.dev.dispatcher]
        self.channel = None

    async def start(self) -> None:
        await self.dev.start()
        await self.dev.dispatcher.client.wait_connected(10)
        self._open_clients()

    async def stop(self) -> None:
        await self.dev.stop()
        if self.channel:
            await self.channel.close()


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
        self.env = {**os.environ, **process_trust_env(), **(env or {})}
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


async def wait_serving(addr: str, timeout: float = 15.0, proc: Proc | None = None, credentials=None) -> None:
    deadline = time.monotonic() + timeout
    async with (grpc.aio.secure_channel(addr, credentials) if credentials else grpc.aio.insecure_channel(addr)) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
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


# --- trust: tokens and certificates for tests ----------------------------------

# The multi-process tests run with tokens on unless NOTIFY_TEST_AUTH=0: every Proc gets
# NOTIFY_TOKENS_FILE and a dispatcher token, and their clients use `channel()` / `cli_env()`.
TEST_AUTH = os.environ.get("NOTIFY_TEST_AUTH", "1") != "0"
SCOPES_BY_NAME = {
    "client": "client", "read": "read", "dispatcher": "dispatcher", "admin": "admin",
    "tests": "client,admin", "rogue": "dispatcher",
}  # fmt: skip


@dataclass(frozen=True)
class Trust:
    """A tokens file with one token per name of SCOPES_BY_NAME (tokens[name] is the secret)."""

    tokens_file: Path
    tokens: dict[str, str]

    @classmethod
    def make(cls, directory: Path) -> "Trust":
        tokens, lines = {}, ["# made by tests/support.py"]
        for name, scopes in SCOPES_BY_NAME.items():
            tokens[name], line = auth.new_token(name, scopes)
            lines.append(line)
        path = Path(directory) / "tokens"
        path.write_text("\n".join(lines) + "\n")
        return cls(path, tokens)

    def settings(self, tmp_path: Path, token: str = "dispatcher", **changes) -> Settings:
        """settings_for with tokens on; the dispatchers built from them send tokens[token]."""
        return settings_for(tmp_path, tokens_file=str(self.tokens_file), token=self.tokens[token], **changes)

    def env(self, token: str = "dispatcher") -> dict[str, str]:
        return {"NOTIFY_TOKENS_FILE": str(self.tokens_file), "NOTIFY_TOKEN": self.tokens[token]}


@functools.cache
def process_trust() -> Trust | None:
    return Trust.make(Path(tempfile.mkdtemp(prefix="notifyagent-trust-"))) if TEST_AUTH else None


def process_trust_env() -> dict[str, str]:
    trust = process_trust()
    return trust.env() if trust else {}


def process_token() -> str:
    """What test clients of Proc-run schedulers send (client and admin scopes)."""
    trust = process_trust()
    return trust.tokens["tests"] if trust else ""


def cli_env(token: str | None = None) -> dict[str, str]:
    """The environment for a `notifyagent` client verb run against Proc-run schedulers."""
    return {**os.environ, "NOTIFY_TOKEN": process_token() if token is None else token}


class _Bearer:
    """Adds `authorization: Bearer TOKEN` to a call (one subclass per call kind: grpc.aio
    files an interceptor under the first kind it implements only)."""

    def __init__(self, token: str) -> None:
        self._md = auth.call_metadata(token)

    def _details(self, d):
        return grpc.aio.ClientCallDetails(d.method, d.timeout, [*(d.metadata or ()), *self._md], d.credentials, d.wait_for_ready)


class _BearerUnaryUnary(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(self._details(details), request)


class _BearerUnaryStream(_Bearer, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(self._details(details), request)


class _BearerStreamUnary(_Bearer, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, details, request_iterator):
        return await continuation(self._details(details), request_iterator)


class _BearerStreamStream(_Bearer, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, details, request_iterator):
        return await continuation(self._details(details), request_iterator)


def open_channel(addr: str, token: str | None = None, *, credentials=None, max_message_bytes: int = 16 << 20) -> grpc.aio.Channel:
    """A client channel that sends `token` (default: the Proc-run schedulers' test token).
    Its connections are its own: a failed handshake on another channel (a test of a wrong
    CA) leaves no backoff behind for this one."""
    options = [("grpc.use_local_subchannel_pool", 1), *message_options(max_message_bytes)]
    token = process_token() if token is None else token
    kinds = (_BearerUnaryUnary, _BearerUnaryStream, _BearerStreamUnary, _BearerStreamStream)
    interceptors = [kind(token) for kind in kinds] if token else None
    if credentials is not None:
        return grpc.aio.secure_channel(addr, credentials, options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(addr, options=options, interceptors=interceptors)


def tls_client(settings: Settings):
    from notifyagent.common.tls import channel_credentials

    return channel_credentials(settings)


@dataclass(frozen=True)
class Pki:
    """A throwaway CA and certificates for 127.0.0.1 and localhost (PEM files in a directory)."""

    ca: Path
    cert: Path  # server and client use (serverAuth and clientAuth)
    key: Path
    other_ca: Path  # a CA that signed nothing here: "the wrong CA"
    other_cert: Path  # signed by other_ca
    other_key: Path

    @classmethod
    def make(cls, directory: Path) -> "Pki":
        directory = Path(directory)
        ca_pem, ca_key, ca_name = _ca("NotifyAgent test CA")
        cert_pem, key_pem = _leaf(ca_key, ca_name, "127.0.0.1")
        other_pem, other_key, other_name = _ca("Someone else's CA")
        ocert_pem, okey_pem = _leaf(other_key, other_name, "127.0.0.1")
        files = {"ca": ca_pem, "cert": cert_pem, "key": key_pem, "other_ca": other_pem,
                 "other_cert": ocert_pem, "other_key": okey_pem}  # fmt: skip
        for name, data in files.items():
            (directory / f"{name}.pem").write_bytes(data)
        return cls(**{name: directory / f"{name}.pem" for name in files})


def _ca(name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM), key, subject


def _leaf(ca_key, ca_name, host: str) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]),
                       critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


# --- engine-level tests: no servers, a clock the test moves -------------------

T0 = 1_700_000_000_000


def spec(**fields) -> Spec:
    return Spec(request=Request(method="POST", url="https://example.com/hook"), **fields)


async def create(ops, specs: list[Spec], *, batch: bool = False) -> list[Notification]:
    """Creates specs the way the servicer does: each as the caller's Notify message (the
    project's own converters both ways), through Operations.create_incoming; returns the
    created notifies as the store keeps them (their spec read back off the stored message)."""
    now = ops.clock.now_ms()
    news = [convert.incoming(convert.notify_to_proto(Notification("", s, State.PENDING, 0), secret=frozenset()), "",
                             now_ms=now, created_by=s.created_by) for s in specs]  # fmt: skip
    out = []
    for new, got in zip(news, await ops.create_incoming(news, batch=batch)):
        if not isinstance(got, Notification):  # created now, not the first with its request_id
            stored = codec.spec_from_message(new.message, trigger_key=new.trigger_key, ordering_key=new.ordering_key,
                                             queue=new.queue, group_key=got.group_key)  # fmt: skip
            got = Notification(got.id, stored, got.state, got.create_ms, new.request_id, got.due_ms)
        out.append(got)
    return out


def granted_leases(session) -> list:
    """Takes the grants waiting in a session's outbox (what its stream would send)."""
    return [item.lease for item in session.take() or () if isinstance(item, Grant)]
