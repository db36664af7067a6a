"""The small HTTP side of a process: /healthz and Prometheus /metrics.

Metrics live in a CollectorRegistry per process (never the global one), so the
all-in-one `dev` process shows its scheduler's and its dispatcher's series on one
/metrics. Gauges that need an await (counts from the store) are set by `refresh`
hooks run just before each scrape."""

from __future__ import annotations

from typing import Awaitable, Callable, Iterable

from aiohttp import web
from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .auth import METRICS, AuthError, Authenticator
from .config import split_addr

disable_created_metrics()  # no `_created` series next to every counter: they only add noise to scrapes


class _Collector:
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self.collect = collect


def add_collector(registry: CollectorRegistry, collect: Callable[[], Iterable[Metric]]) -> None:
    """Series computed at scrape time from what a component knows (no await)."""
    registry.register(_Collector(collect))


def gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    g.add_metric(list((labels or {}).values()), value)
    return g


class OpsServer:
    """Serves /healthz (200 while healthy()) and /metrics (from collect(), read at scrape time).

    ssl_context: TLS (tls.ServerTls.ssl_context()); metrics_auth: /metrics asks `authenticator`
    for a token with scope read or admin (NOTIFY_METRICS_AUTH; /healthz stays open)."""

    def __init__(
        self, addr: str, *, healthy: Callable[[], bool], collect: Callable[[], Iterable[Metric]] | None = None,
        registry: CollectorRegistry | None = None, refresh: Iterable[Callable[[], Awaitable[None]]] = (),
        ssl_context=None, authenticator: Authenticator | None = None, metrics_auth: bool = False,
    ) -> None:  # fmt: skip
        self._addr = addr
        self._ssl = ssl_context
        self._auth = authenticator if metrics_auth else None
        self._healthy = healthy
        self._registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        if collect is not None:
            add_collector(self._registry, collect)
        self._refresh = list(refresh)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, port = split_addr(self._addr, "NOTIFY_HTTP_ADDR")
        site = web.TCPSite(self._runner, host, port, ssl_context=self._ssl)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _health(self, request: web.Request) -> web.Response:
        ok = self._healthy()
        return web.Response(status=200 if ok else 503, text="ok\n" if ok else "not serving\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        if self._auth is not None:
            try:
                self._auth.authorize(request.headers.get("Authorization", ""), METRICS)
            except AuthError as e:
                status = 401 if e.code.name == "UNAUTHENTICATED" else 403
                return web.Response(status=status, text=f"{e}\n", headers={"WWW-Authenticate": "Bearer"} if status == 401 else {})
        for refresh in self._refresh:
            await refresh()
        return web.Response(body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
