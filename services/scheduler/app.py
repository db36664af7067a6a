"""The scheduler's composition root: reads settings, builds the store, engine,
servers and registry entry, and owns start and stop."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry

from ..common import auth
from ..common.auth import AuthInterceptor, Authenticator
from ..common.config import ConfigError, Settings, StartupError, split_addr
from ..common.grpcutil import create_server, set_serving
from ..common.sealing import SecretBox, secret_names
from ..common.tls import ServerTls
from ..common.web import OpsServer
from ..registry import Node, Registry, RegistryError
from ..v1 import admin_service_pb2_grpc, dispatch_service_pb2_grpc, notify_service_pb2_grpc
from .engine import queues
from .api.dispatch import DispatchServicer
from .api import console
from .api.http import ApiError, HttpApi
from .engine.core import Engine, EngineSettings
from .engine.errors import Unavailable
from .engine.operations import Operations
from .api.routing import Router
from .api.servicer import AdminServicer, NotifyServicer
from .engine.ownership import Ownership, SoleOwnership
from .store.sqlite import SqliteStore
from .store.port import Store
from .engine.validate import Limits
from .alerts import Alerter, parse_channels
from .metrics import SchedulerMetrics

log = logging.getLogger(__name__)
SERVICES = ["notifyagent.v1.NotifyService", "notifyagent.v1.DispatchService", "notifyagent.v1.AdminService"]
REGISTRY_TTL_S = 10.0
STORE_CHECK_S = 0.5  # how often health looks at the store
QUEUES_REFRESH_S = 1.0


def make_store(url: str, secrets: SecretBox | None = None, *, partitions: int = 16, ownership_ttl: float = 5.0) -> Store:
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = url[len("sqlite:///"):].split("?", 1)[0] if url.startswith("sqlite:///") else ""
        if not path or path.startswith(":memory:"):
            raise ConfigError(f"NOTIFY_STORE: write sqlite:///relative/path.db or sqlite:////absolute/path.db, not {url!r}")
        sync = parse_qs(parts.query).get("synchronous", ["FULL"])[0]
        try:
            return SqliteStore(path, synchronous=sync, secrets=secrets, partitions=partitions)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if parts.scheme in ("postgres", "postgresql"):
        try:
            from .store.postgres import PostgresStore
        except ImportError as e:
            raise ConfigError(f"NOTIFY_STORE is PostgreSQL but its driver is missing ({e}); pip install 'notifyagent[postgres]'") from e
        return PostgresStore(url, secrets=secrets, partitions=partitions, idle_tx_timeout_s=ownership_ttl)
    raise ConfigError(f"NOTIFY_STORE must start with sqlite:/// or postgresql://, not {url!r}")


class SchedulerApp:
    LIVE_SETTINGS = frozenset({"queues"})  # what reload() applies; the rest needs a restart

    def __init__(self, settings: Settings, *, registry: Registry, metrics: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.auth = Authenticator(settings.tokens_file)
        self.tls = ServerTls.from_settings(settings)
        self.secret = secret_names(settings.secret_headers)
        self.store = make_store(settings.store, SecretBox.from_settings(settings.secret_key, settings.secret_headers),
                                partitions=settings.partitions, ownership_ttl=settings.ownership_ttl)  # fmt: skip
        self.ownership = self._ownership(settings)
        self.router = Router(self.ownership, settings) if self.shared else None
        self.engine = Engine(
            store=self.store,
            fence=self.ownership.fence,
            settings=EngineSettings(
                horizon_s=settings.horizon, lease_margin_s=settings.lease_margin, max_in_memory=settings.max_in_memory,
                reconnect_grace_s=settings.reconnect_grace,
                limits=Limits(max_body_bytes=settings.max_body_bytes, max_message_bytes=settings.max_message_bytes)),
        )
        self.metrics_registry = metrics if metrics is not None else CollectorRegistry(auto_describe=False)
        self.metrics = SchedulerMetrics(self.engine, self.metrics_registry)
        channels = parse_channels(settings.alerts)
        self.alerter = Alerter(channels=channels, interval_s=settings.alert_interval, enqueue=self.engine.enqueue) if channels else None
        if self.alerter is not None:
            self.engine.observers.finished.append(self.alerter.finished)
        self.on_shutdown = lambda: log.warning("Shutdown asked, but nothing runs this scheduler to stop it")
        self.port = 0
        self._server = None
        self._health = None
        self._ops: OpsServer | None = None
        self._node: Node | None = None
        self.dispatch: DispatchServicer | None = None  # built at start
        self._stopped = False
        self._owning = False
        self.store_ok = True  # health: the store can commit
        self._watch: asyncio.Task | None = None
        self._queues_task: asyncio.Task | None = None

    @property
    def shared(self) -> bool:
        """Several schedulers may share this store (PostgreSQL): ownership moves, calls are routed."""
        return not isinstance(self.ownership, SoleOwnership)

    def _ownership(self, settings: Settings) -> Ownership:
        if self.store.__class__.__name__ == "PostgresStore":
            from .store.postgres_ownership import PostgresOwnership

            return PostgresOwnership(self.store, address="", ttl_s=settings.ownership_ttl)
        return SoleOwnership(settings.partitions)

    @property
    def address(self) -> str:
        host, _ = split_addr(self.settings.grpc_addr, "NOTIFY_GRPC_ADDR")
        return f"{host}:{self.port}"

    async def start(self) -> None:
        try:
            await self.store.open()
        except Unavailable as e:
            raise StartupError(f"NOTIFY_STORE: {e}") from e
        except OSError as e:  # e.g. a directory for the SQLite file that cannot be made
            raise StartupError(f"NOTIFY_STORE: cannot open the store: {e}") from e
        e = self.engine
        # One servicer object per service, shared by the gRPC server and the HTTP/JSON API.
        notify = NotifyServicer(Operations(e, self.store), self.router, secret=self.secret)
        admin = AdminServicer(e, self.router, shutdown=lambda: self.on_shutdown())
        # Served over gRPC, and in memory to dev's own dispatcher (services/local_lease.py).
        self.dispatch = DispatchServicer(e, max_streams=self.settings.dispatcher_max_streams,
                                         max_credit=self.settings.dispatcher_max_credit,
                                         max_message_bytes=self.settings.max_message_bytes)  # fmt: skip
        self._server, self.port, self._health = create_server(
            self.settings.grpc_addr,
            [
                lambda s: notify_service_pb2_grpc.add_NotifyServiceServicer_to_server(notify, s),
                lambda s: dispatch_service_pb2_grpc.add_DispatchServiceServicer_to_server(self.dispatch, s),
                lambda s: admin_service_pb2_grpc.add_AdminServiceServicer_to_server(admin, s),
            ],
            SERVICES,
            # Without a tokens file auth stays off for the process's life (SIGHUP re-reads only a
            # file it was given): no interceptor then, whose Python runs on every call.
            interceptors=[AuthInterceptor(self.auth)] if self.auth.enabled else [],
            credentials=self.tls.grpc_credentials() if self.tls else None,
            max_message_bytes=self.settings.max_message_bytes,
        )  # fmt: skip
        self.ownership.address = self.settings.advertise_addr or self.address
        await self.engine.start(self._queue_configs(self.settings))
        self._owning = True  # from here stop() gives partitions up (not after a store that never opened)
        await self.ownership.start(self._on_partitions)
        if self.shared:
            self._queues_task = asyncio.create_task(self._follow_queues(), name="queue-settings")
        if self.settings.http_addr:
            http_api = HttpApi(notify=notify, admin=admin, authorize=self._authorize_http,
                               max_body_bytes=self.settings.max_body_bytes)  # fmt: skip

            def routes(app) -> None:  # the /v1 API, and the console at / built on it
                http_api.install(app)
                console.install(app)

            self._ops = OpsServer(
                self.settings.http_addr, healthy=lambda: e.accepting and self.store_ok, registry=self.metrics_registry,
                refresh=[self.metrics.refresh], ssl_context=self.tls.ssl_context() if self.tls else None,
                authenticator=self.auth, metrics_auth=self.settings.metrics_auth,
                extend=routes, client_max_size=http_api.body_limit,
            )  # fmt: skip
            await self._ops.start()
        await self._server.start()
        await set_serving(self._health, SERVICES, True)
        self._watch = asyncio.create_task(self._watch_store(), name="store-health")
        host, port = split_addr(self.settings.advertise_addr or self.address, "NOTIFY_ADVERTISE_ADDR")
        if host in ("0.0.0.0", "::") and not self.settings.advertise_addr:
            host = "127.0.0.1"  # listening everywhere: this host reaches it on loopback (others need NOTIFY_ADVERTISE_ADDR)
        self._node = Node(id=f"scheduler-{os.getpid()}-{port}", address=host, port=port, metadata={"role": "scheduler"})
        try:
            await self.registry.register(self.settings.service_name, self._node, ttl=REGISTRY_TTL_S)
        except RegistryError as e:
            self._node = None
            raise StartupError(f"NOTIFY_REGISTRY: cannot register: {e}") from e
        log.info("scheduler serving gRPC on %s%s (store %s; %s; %s)", self.address,
                 f", HTTP on {self.http_address}" if self._ops else "", _redact(self.settings.store),
                 "mTLS" if self.tls and self.tls.mutual else "TLS" if self.tls else "plaintext",
                 f"tokens from {self.settings.tokens_file}" if self.auth.enabled else "no tokens")  # fmt: skip

    async def _authorize_http(self, method: str, metadata) -> None:
        """The HTTP/JSON API's one auth hook: the same tokens and scopes as the gRPC interceptor."""
        try:
            auth.run_as(self.auth.authorize(metadata, method))
        except auth.AuthError as e:
            log.warning("refused HTTP %s: %s: %s", method, e.code.name, e)
            raise ApiError.of(e.code.value[0], str(e)) from None

    @property
    def registered_address(self) -> str:
        """host:port under which dispatchers find this scheduler in the registry ('' before start)."""
        return f"{self._node.address}:{self._node.port}" if self._node is not None else ""

    @property
    def http_address(self) -> str:
        """host:port of the HTTP side (/v1 API, /healthz, /metrics), the bound port when 0 was asked."""
        if self._ops is None:
            return ""
        host, _ = split_addr(self.settings.http_addr, "NOTIFY_HTTP_ADDR")
        return f"{host}:{self._ops.port}"

    async def stop(self) -> None:
        """Health NOT_SERVING, deregister, stop granting and wait for results, stop serving, close. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self._health is not None:
            await set_serving(self._health, SERVICES, False)
        if self._node is not None:
            try:
                await self.registry.deregister(self.settings.service_name, self._node.id)
            except Exception as e:  # stopping must go on
                log.warning("deregistering failed: %s", e)
        await self.drain()
        if self.alerter is not None:
            await self.alerter.stop()  # the open window is committed while the store is open
        if self._server is not None:
            await self._server.stop(grace=1.0)
        if self._queues_task is not None:
            self._queues_task.cancel()
            await asyncio.gather(self._queues_task, return_exceptions=True)
        if self._owning:
            await self.ownership.stop()
        if self.router is not None:
            await self.router.close()
        await self.engine.stop()
        await self.store.close()
        if self._ops is not None:
            await self._ops.stop()
        if self._server is not None:
            log.info("scheduler stopped")

    async def _watch_store(self) -> None:
        """Health follows the store: NOT_SERVING while it cannot commit, SERVING once it can again."""
        while True:
            await asyncio.sleep(STORE_CHECK_S)
            ok = self.store.healthy or await self.store.probe()
            if ok != self.store_ok and not self._stopped:
                self.store_ok = ok
                await set_serving(self._health, SERVICES, ok)
                if ok:
                    log.warning("the store commits again: health SERVING")
                else:
                    log.error("the store cannot commit: health NOT_SERVING until it can")

    @classmethod
    def check_settings(cls, settings: Settings) -> None:
        """Raises ConfigError for a store URL or queue limits this scheduler cannot take; opens nothing."""
        make_store(settings.store)
        cls._queue_configs(settings)

    async def _follow_queues(self) -> None:
        """Queue pause and limits are stored: every scheduler reads them each second and enforces
        its share of each limit (divided by the live schedulers)."""
        while True:
            await asyncio.sleep(QUEUES_REFRESH_S)
            try:
                await self.engine.refresh_queues(len(self.ownership.members()))
            except Exception as e:  # noqa: BLE001 -- the store is away: the settings in force stay
                log.warning("reading queue settings failed: %s", e)

    def _on_partitions(self, gained: set[int], lost: set[int]) -> None:
        if lost:
            self.engine.give_up_partitions(lost)
        if gained:
            self.engine.take_partitions(gained)

    async def drain(self) -> None:
        """Stops granting and waits up to the grace period for the results of calls in flight."""
        await self.engine.drain(self.settings.grace)

    @staticmethod
    def _queue_configs(settings: Settings):
        try:
            return queues.parse(settings.queues)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def reread_files(self) -> list[str]:
        """SIGHUP: the tokens file and the TLS files again (a bad one keeps the old); returns what changed."""
        return [c for c in (self.auth.reload(), self.tls.reload() if self.tls else None) if c]

    async def reload(self, settings: Settings) -> list[str]:
        """Applies what can change without a restart (queue limits); returns what changed."""
        changes = await self.engine.configure_queues(self._queue_configs(settings))
        self.settings = dataclasses.replace(self.settings, queues=settings.queues)
        return changes


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url
