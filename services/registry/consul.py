"""Registry backed by a Consul agent's HTTP API.

Consul client choice: the adapter calls Consul's HTTP API directly with aiohttp
(``consul_api.py``, about 130 lines) rather than through py-consul. py-consul
1.8.0 does ship an asyncio client (``consul.aio``), but it builds its aiohttp
connector with arguments aiohttp has deprecated (``verify_ssl``,
``ssl_context``: warnings that fail our warnings-as-errors tests, for arguments
aiohttp plans to remove), it opens its ClientSession in the constructor (so it
can only be built inside a running event loop), and the CONSUL_HTTP_TOKEN
environment variable silently overrides a token passed to it. Its sync client
would need ``asyncio.to_thread`` for every call, and a watch's blocking query
would then pin a worker thread for up to its wait time with no way to cancel
it. NotifyAgent uses nine endpoints; calling them directly keeps the event loop
free, lets ``Watcher.stop()`` cancel a blocking query at once, and keeps
retries (tenacity: bounded, exponential backoff with jitter) and error mapping
(RegistryUnavailable when unreachable, timed out, 429 or 5xx; RegistryError
otherwise) in one place. Fallback to stale answers is not here but in
``CachedRegistry``.

Each registration is a Consul service whose ID is the node id (so node ids
must be unique per agent, as in go-micro) with a TTL check
``service:<node id>``; a heartbeat passes it every ttl/3 and registers the
service again if the agent has forgotten it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import quote

from ._tasks import Holdings, until_stopped
from .base import Node, Service, ServiceNotFound, Watcher
from .consul_api import ConsulAPI, duration

log = logging.getLogger(__name__)


def _check_id(node_id: str) -> str:
    return f"service:{node_id}"


def _segment(text: str) -> str:
    """One URL path segment, escaped the way py-consul does (':' kept)."""
    return quote(text, safe=":")


def _node(entry: dict[str, Any]) -> Node:
    service = entry["Service"]
    address = service.get("Address") or entry.get("Node", {}).get("Address", "")
    return Node(
        id=service["ID"], address=address, port=int(service["Port"]), metadata=service.get("Meta") or {}
    )


class ConsulWatcher:
    """Blocking queries on health/service/<name>?passing, returning only real changes."""

    def __init__(self, registry: ConsulRegistry, name: str, *, wait: float) -> None:
        self._registry = registry
        self._name = name
        self._wait = wait
        self._index = 0
        self._last: tuple[Node, ...] | None = None
        self._stopped = asyncio.Event()

    async def next(self) -> list[Node]:
        while True:
            index = self._index if self._last is not None else 0
            query = self._registry.healthy(self._name, index=index, wait=self._wait)
            new_index, nodes = await until_stopped(query, self._stopped)
            # Consul: an index that goes backwards means a reset; start over from 0.
            self._index = 0 if new_index < self._index else max(new_index, 1)
            if nodes != self._last:
                self._last = nodes
                return list(nodes)

    def stop(self) -> None:
        self._stopped.set()


class ConsulRegistry:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8500,
        scheme: str = "http",
        token: str | None = None,
        request_timeout: float = 5.0,
        retry_attempts: int = 3,
        watch_wait: float = 30.0,
        deregister_critical_after: float = 60.0,
    ) -> None:
        self.api = ConsulAPI(
            host=host,
            port=port,
            scheme=scheme,
            token=token,
            request_timeout=request_timeout,
            retry_attempts=retry_attempts,
        )
        self._request_timeout = request_timeout
        self._watch_wait = watch_wait
        self._reap_after = deregister_critical_after
        self._held = Holdings()

    async def register(self, service_name: str, node: Node, *, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl!r}")
        self._held.check_open()
        await self._held.stop_heartbeat((service_name, node.id))
        await self._put_registration(service_name, node, ttl)

        async def beat() -> None:
            reply = await self.api.request(
                "PUT", f"/agent/check/pass/{_segment(_check_id(node.id))}", allow_404=True
            )
            if reply.status == 404:
                log.warning("consul forgot %s/%s; registering it again", service_name, node.id)
                await self._put_registration(service_name, node, ttl)

        await self._held.start_heartbeat(
            (service_name, node.id), beat, interval=ttl / 3, name=f"consul heartbeat {service_name}/{node.id}"
        )

    async def deregister(self, service_name: str, node_id: str) -> None:
        await self._held.stop_heartbeat((service_name, node_id))
        await self.api.request("PUT", f"/agent/service/deregister/{_segment(node_id)}", allow_404=True)

    async def get_service(self, name: str) -> list[Node]:
        _, nodes = await self.healthy(name)
        if not nodes:
            raise ServiceNotFound(name)
        return list(nodes)

    async def list_services(self) -> list[Service]:
        reply = await self.api.request("GET", "/catalog/services")
        names = sorted(reply.body or {})
        answers = await asyncio.gather(*(self.healthy(name) for name in names))
        return [Service(name, nodes) for name, (_, nodes) in zip(names, answers, strict=True) if nodes]

    async def watch(self, name: str) -> Watcher:
        watcher = ConsulWatcher(self, name, wait=self._watch_wait)
        self._held.watchers.append(watcher)
        return watcher

    async def close(self) -> None:
        if await self._held.close(self.deregister):
            await self.api.close()

    async def healthy(self, name: str, *, index: int = 0, wait: float = 0.0) -> tuple[int, tuple[Node, ...]]:
        """(X-Consul-Index, passing nodes sorted by id); blocks while ``index`` is current."""
        params = {"passing": "1"}
        timeout = None
        if index:
            params.update(index=str(index), wait=duration(wait))
            timeout = wait + wait / 16 + self._request_timeout  # Consul adds up to wait/16 jitter
        reply = await self.api.request(
            "GET", f"/health/service/{_segment(name)}", params=params, timeout=timeout
        )
        nodes = tuple(sorted((_node(e) for e in reply.body or ()), key=lambda n: n.id))
        return reply.consul_index, nodes

    async def _put_registration(self, service_name: str, node: Node, ttl: float) -> None:
        check = {
            "CheckID": _check_id(node.id),
            "Name": f"{service_name} heartbeat",
            "TTL": duration(ttl),
            "DeregisterCriticalServiceAfter": duration(max(self._reap_after, ttl)),
        }
        body = {
            "ID": node.id,
            "Name": service_name,
            "Address": node.address,
            "Port": node.port,
            "Meta": dict(node.metadata),
            "Check": check,
        }
        await self.api.request("PUT", "/agent/service/register", body=body)
        # A TTL check starts critical: pass it now so the node is healthy at once.
        await self.api.request("PUT", f"/agent/check/pass/{_segment(_check_id(node.id))}")
