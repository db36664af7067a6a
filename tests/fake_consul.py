"""A FAKE of the Consul HTTP API, for tests only. This is NOT Consul.

An aiohttp app serving just the endpoints ``ConsulRegistry`` uses, started on
127.0.0.1 port 0:

- PUT /v1/agent/service/register, /v1/agent/service/deregister/<id>,
  /v1/agent/check/pass/<check id>
- GET /v1/health/service/<name>[?passing], GET /v1/catalog/services
  (both blocking queries: X-Consul-Index header, ``?index=&wait=``)

Kept faithful where the adapter depends on it: TTL checks start critical and
really expire (a reaper runs every 20 ms), services critical for longer than
DeregisterCriticalServiceAfter are removed. Simplified: one global index for
every blocking query (spurious wake-ups are allowed by Consul's contract too), a
single node, no ACLs or tags.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """A Go duration such as '1500ms', '10s' or '1m30s', in seconds."""
    parts = list(_DURATION_PART.finditer(text))
    if not text or "".join(m.group(0) for m in parts) != text:
        raise web.HTTPBadRequest(text=f"invalid duration {text!r}")
    return sum(float(m.group(1)) * _UNITS[m.group(2)] for m in parts)


@dataclass
class _Check:
    service_id: str
    ttl: float
    reap_after: float | None
    status: str = "critical"
    expires_at: float = 0.0
    critical_since: float = 0.0


class FakeConsul:
    def __init__(self) -> None:
        self.index = 1
        self.services: dict[str, dict[str, Any]] = {}  # service id -> registration
        self.checks: dict[str, _Check] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path), for tests to count calls
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._reaper: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        app = web.Application(middlewares=[self._record])
        app.add_routes(
            [
                web.put("/v1/agent/service/register", self._register),
                web.put("/v1/agent/service/deregister/{id}", self._deregister),
                web.put("/v1/agent/check/pass/{id}", self._pass),
                web.get("/v1/health/service/{name}", self._health),
                web.get("/v1/catalog/services", self._catalog),
            ]
        )
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._reaper = asyncio.create_task(self._reap_forever())

    async def stop(self) -> None:
        """Stop serving (connections are refused afterwards); state is kept."""
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.wait({self._reaper})
            self._reaper = None
        if self._runner is not None:
            self._bump()  # wake blocking queries so shutdown is quick
            await self._runner.cleanup()
            self._runner = None

    def forget_service(self, service_id: str) -> None:
        """What an agent restart without persisted state does to a registration."""
        self.services.pop(service_id, None)
        self.checks = {k: c for k, c in self.checks.items() if c.service_id != service_id}
        self._bump()

    # -- plumbing ---------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        response = await handler(request)
        response.headers["X-Consul-Index"] = str(self.index)
        return response

    def _bump(self) -> None:
        self.index += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def _block(self, request: web.Request) -> None:
        index = int(request.query.get("index", "0") or 0)
        wait = min(parse_duration(request.query.get("wait", "5m")), 600.0)
        deadline = time.monotonic() + wait
        while index and self.index <= index and self._runner is not None:
            changed, remaining = self._changed, deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(0.02)
            self._reap(time.monotonic())

    def _reap(self, now: float) -> None:
        for check in self.checks.values():
            if check.status == "passing" and check.expires_at <= now:
                check.status, check.critical_since = "critical", now
                self._bump()
        for check in list(self.checks.values()):
            reap_after = check.reap_after
            if (
                check.status == "critical"
                and reap_after is not None
                and now - check.critical_since >= reap_after
            ):
                self.forget_service(check.service_id)

    # -- agent ------------------------------------------------------------

    async def _register(self, request: web.Request) -> web.Response:
        body = await request.json()
        service_id = body.get("ID") or body["Name"]
        self.services[service_id] = {
            "ID": service_id,
            "Service": body["Name"],
            "Address": body.get("Address", ""),
            "Port": body.get("Port", 0),
            "Meta": body.get("Meta") or {},
            "Tags": [],
        }
        check = body.get("Check")
        if check:
            reap = check.get("DeregisterCriticalServiceAfter")
            self.checks[check.get("CheckID") or f"service:{service_id}"] = _Check(
                service_id=service_id,
                ttl=parse_duration(check["TTL"]),
                reap_after=max(parse_duration(reap), 0.05) if reap else None,
                critical_since=time.monotonic(),
            )
        self._bump()
        return web.Response()

    async def _deregister(self, request: web.Request) -> web.Response:
        service_id = request.match_info["id"]
        if service_id not in self.services:
            raise web.HTTPNotFound(text=f'Unknown service ID "{service_id}"')
        self.forget_service(service_id)
        return web.Response()

    async def _pass(self, request: web.Request) -> web.Response:
        check = self.checks.get(request.match_info["id"])
        if check is None:
            raise web.HTTPNotFound(text=f'Unknown check ID "{request.match_info["id"]}"')
        check.expires_at = time.monotonic() + check.ttl
        if check.status != "passing":
            check.status = "passing"
            self._bump()
        return web.Response()

    async def _health(self, request: web.Request) -> web.Response:
        await self._block(request)
        passing_only = request.query.get("passing", "false") not in ("0", "false")
        entries = []
        for service in self.services.values():
            if service["Service"] != request.match_info["name"]:
                continue
            checks = [
                {"CheckID": cid, "ServiceID": c.service_id, "Status": c.status}
                for cid, c in self.checks.items()
                if c.service_id == service["ID"]
            ]
            checks.append({"CheckID": "serfHealth", "ServiceID": "", "Status": "passing"})
            if passing_only and any(c["Status"] != "passing" for c in checks):
                continue
            node = {"Node": "fake-node", "Address": "127.0.0.1"}
            entries.append({"Node": node, "Service": service, "Checks": checks})
        return web.json_response(entries)

    async def _catalog(self, request: web.Request) -> web.Response:
        await self._block(request)
        return web.json_response({s["Service"]: [] for s in self.services.values()})
