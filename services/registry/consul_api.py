"""A thin asyncio client for the few Consul HTTP API endpoints the adapter uses.

Owns the aiohttp session, the ACL token header, per-request timeouts and the
retry policy: connection errors, timeouts, 429 and 5xx answers are retried a
bounded number of times with jittered exponential backoff (tenacity), then
surface as RegistryUnavailable. Other 4xx answers are RegistryError at once.
"""

from __future__ import annotations

import json
import logging
from typing import Any, NamedTuple

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from .base import RegistryError, RegistryUnavailable

log = logging.getLogger(__name__)


class ConsulReply(NamedTuple):
    status: int
    consul_index: int  # X-Consul-Index, 0 when absent
    body: Any  # decoded JSON, None for an empty body or an allowed 404


class _Transient(Exception):
    """Worth another try: the agent was unreachable, slow, overloaded or failing."""


def duration(seconds: float) -> str:
    """Seconds as a Go duration string: 10 -> '10s', 1.5 -> '1500ms'."""
    millis = max(1, round(seconds * 1000))
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


class ConsulAPI:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8500,
        scheme: str = "http",
        token: str | None = None,
        request_timeout: float = 5.0,
        retry_attempts: int = 3,
        retry_max_backoff: float = 1.0,
    ) -> None:
        self.base_url = f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
        self._headers = {"X-Consul-Token": token} if token else {}
        self._timeout = request_timeout
        self._attempts = retry_attempts
        self._max_backoff = retry_max_backoff
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        data: str | None = None,
        timeout: float | None = None,
        allow_404: bool = False,
    ) -> ConsulReply:
        """One API call with bounded retries; ``path`` starts after ``/v1``."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_random_exponential(multiplier=0.05, max=self._max_backoff),
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._once(method, path, params, body, data, timeout, allow_404)
        except _Transient as exc:
            raise RegistryUnavailable(f"consul at {self.base_url}: {method} {path}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _once(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None,
        body: Any,
        data: str | None,
        timeout: float | None,
        allow_404: bool,
    ) -> ConsulReply:
        session = self._client()
        url = f"{self.base_url}/v1{path}"
        client_timeout = aiohttp.ClientTimeout(total=timeout or self._timeout)
        try:
            async with session.request(
                method,
                url,
                params=params,
                json=body,
                data=data,
                headers=self._headers,
                timeout=client_timeout,
            ) as resp:
                status, text = resp.status, await resp.text()
                index = int(resp.headers.get("X-Consul-Index", "0") or 0)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        if status == 429 or status >= 500:
            raise _Transient(f"HTTP {status}: {text.strip()}")
        if status == 404 and allow_404:
            return ConsulReply(status, index, None)
        if status >= 400:
            raise RegistryError(f"consul {method} {path}: HTTP {status}: {text.strip()}")
        return ConsulReply(status, index, json.loads(text) if text.strip() else None)

    def _client(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RegistryError("consul client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session
