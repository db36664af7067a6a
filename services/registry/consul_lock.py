"""Leader lock on Consul: a session plus ``kv/<key>?acquire=<session>``.

The session (behaviour ``release``) is renewed every session_ttl/3. If Consul
says the session is gone, or no renewal has succeeded for a whole session TTL,
the lock counts as lost and ``wait_lost()`` returns, so a leader steps down
before, or as, Consul hands the key to someone else. Consul refuses the key to
others for ``lock_delay`` after a session is invalidated (not after release()).
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import quote

from ._tasks import Heartbeat
from .base import RegistryError
from .consul_api import ConsulAPI, duration

log = logging.getLogger(__name__)


class ConsulLeaderLock:
    def __init__(
        self,
        api: ConsulAPI,
        *,
        key_prefix: str = "notifyagent/leader/",
        session_ttl: float = 10.0,
        lock_delay: float = 5.0,
    ) -> None:
        self._api = api
        self._prefix = key_prefix
        self._session_ttl = session_ttl
        self._lock_delay = lock_delay
        self._session_id: str | None = None
        self._renewal: Heartbeat | None = None
        self._last_renewed = 0.0
        self._name: str | None = None
        self._lost = asyncio.Event()
        self._lost.set()

    @property
    def held(self) -> bool:
        return not self._lost.is_set()

    async def acquire(self, name: str, holder_id: str) -> bool:
        if self.held and name != self._name:
            raise RegistryError(f"this contender already holds lock {self._name!r}")
        session_id = await self._ensure_session(holder_id)
        reply = await self._api.request(
            "PUT", self._key_path(name), params={"acquire": session_id}, data=holder_id
        )
        if reply.body is True:
            self._name = name
            self._lost.clear()
            return True
        if self.held:
            log.warning("leader lock %r was taken from us", name)
            self._lost.set()
        return False

    async def release(self) -> None:
        session_id, self._session_id = self._session_id, None
        renewal, self._renewal = self._renewal, None
        if renewal is not None:
            await renewal.stop()
        try:
            if session_id is not None and self.held and self._name is not None:
                await self._api.request("PUT", self._key_path(self._name), params={"release": session_id})
            if session_id is not None:
                await self._api.request("PUT", f"/session/destroy/{quote(session_id)}")
        except RegistryError as exc:  # the session expires by itself; the key follows
            log.warning("could not release leader lock %r cleanly: %s", self._name, exc)
        finally:
            self._lost.set()

    async def wait_lost(self) -> None:
        await self._lost.wait()

    def _key_path(self, name: str) -> str:
        return "/kv/" + quote(self._prefix + name, safe="/")

    async def _ensure_session(self, holder_id: str) -> str:
        if self._session_id is not None:
            return self._session_id
        if self._renewal is not None:  # left over from a session Consul dropped
            await self._renewal.stop()
        body = {
            "Name": f"notifyagent leader lock ({holder_id})",
            "TTL": duration(self._session_ttl),
            "LockDelay": duration(self._lock_delay),
            "Behavior": "release",
        }
        reply = await self._api.request("PUT", "/session/create", body=body)
        self._session_id = reply.body["ID"]
        self._last_renewed = time.monotonic()
        self._renewal = Heartbeat(self._renew, interval=self._session_ttl / 3, name="consul session renewal")
        self._renewal.start()
        return self._session_id

    async def _renew(self) -> None:
        session_id = self._session_id
        if session_id is None:
            return
        try:
            reply = await self._api.request("PUT", f"/session/renew/{quote(session_id)}", allow_404=True)
        except RegistryError:
            if time.monotonic() - self._last_renewed >= self._session_ttl:
                self._session_lost("no renewal succeeded for a whole session TTL")
            raise
        if reply.status == 404:
            self._session_lost("consul no longer knows the session")
        else:
            self._last_renewed = time.monotonic()

    def _session_lost(self, why: str) -> None:
        if self.held:
            log.warning("leader lock %r lost: %s", self._name, why)
        self._session_id = None
        self._lost.set()
