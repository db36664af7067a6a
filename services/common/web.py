"""The HTTP side of a process: /healthz, Prometheus /metrics, and whatever routes
the process adds (the scheduler's HTTP/JSON API) on the same address.

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

from .config import StartupError, split_addr

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
    """Serves /healthz (200 while healthy()) and /metrics (from collect(), read at scrape time)."""

    def __init__(
        self, addr: str, *, healthy: Callable[[], bool], collect: Callable[[], Iterable[Metric]] | None = None,
        registry: CollectorRegistry | None = None, refresh: Iterable[Callable[[], Awaitable[None]]] = (),
        extend: Callable[[web.Application], None] | None = None, client_max_size: int = 1 << 20,
    ) -> None:  # fmt: skip
        """extend(app) adds routes; client_max_size bounds every request body (aiohttp answers 413 beyond)."""
        self._addr = addr
        self._extend = extend
        self._client_max_size = client_max_size
        self._healthy = healthy
        self._registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        if collect is not None:
            add_collector(self._registry, collect)
        self._refresh = list(refresh)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application(client_max_size=self._client_max_size)
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/metrics", self._metrics)
        if self._extend is not None:
            self._extend(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, port = split_addr(self._addr, "NOTIFY_HTTP_ADDR")
        site = web.TCPSite(self._runner, host, port, reuse_port=False)
        try:
            await site.start()
        except OSError as e:
            await self.stop()
            raise StartupError(f"cannot listen on {self._addr} ({e.strerror or e}); set NOTIFY_HTTP_ADDR "
                               "to a free address, or empty to turn HTTP off") from e  # fmt: skip
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _health(self, request: web.Request) -> web.Response:
        ok = self._healthy()
        return web.Response(status=200 if ok else 503, text="ok\n" if ok else "not serving\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        for refresh in self._refresh:
            await refresh()
        return web.Response(body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
