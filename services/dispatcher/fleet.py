"""LeaseFleet: one Lease stream per scheduler the dispatcher discovers, its capacity shared among them.

Schedulers sharing a store each grant the notifies of their own partitions, so
a dispatcher keeps a LeaseClient (one stream, its reconnects and results) per
scheduler it finds in the registry, looked up again every `refresh_s`. A
scheduler that appears gets a stream; one that vanishes has its stream wound
down (its calls in flight finish and are reported while it answers). The
capacity is split evenly across the streams that are up (all of them while none
is; a stream counts as down once it has been disconnected for DOWN_AFTER_S, so a
reconnect does not reshuffle the shares) and re-split every refresh as they come
and go, so a scheduler that is listed but down holds no share (each client
announces its new share on a fresh stream)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

import grpc

from ..common.grpcutil import DEFAULT_MAX_MESSAGE_BYTES
from ..registry import RegistryError
from .call import Sender
from .client import LeaseClient, new_dispatcher_id
from .stream import Transport

log = logging.getLogger(__name__)
REFRESH_S = 1.0
LEAVE_GRACE_S = 2.0
DOWN_AFTER_S = 3.0


class LeaseFleet:
    def __init__(
        self, *, sender: Sender, discover: Callable[[], Awaitable[list[str]]], capacity: int,
        dispatcher_id: str | None = None, max_backoff_s: float = 5.0, refresh_s: float = REFRESH_S,
        credentials: Callable[[], grpc.ChannelCredentials | None] = lambda: None, metadata: tuple = (),
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, transport: Transport | None = None,
    ) -> None:  # fmt: skip
        """credentials, metadata, max_message_bytes and transport: as LeaseClient takes them, for every stream."""
        self._transport = transport
        self._max_message = max_message_bytes
        self.dispatcher_id = dispatcher_id or new_dispatcher_id()
        self.capacity = capacity
        self._sender = sender
        self._discover = discover
        self._backoff = max_backoff_s
        self._refresh = refresh_s
        self._credentials = credentials
        self._metadata = metadata
        self._clients: dict[str, tuple[LeaseClient, asyncio.Task]] = {}
        self._gone_calls = 0  # calls made by streams to schedulers that vanished (wound down)
        self._leaving: dict[asyncio.Task, LeaseClient] = {}  # streams winding down: their calls still run
        self._down_since: dict[str, float] = {}  # address -> when its stream was first seen disconnected
        self._stopped = asyncio.Event()
        self._found = asyncio.Event()

    @property
    def streams(self) -> list[LeaseClient]:
        return [c for c, _ in self._clients.values()]

    @property
    def calls_done(self) -> int:
        return self._gone_calls + sum(c.calls_done for c in (*self.streams, *self._leaving.values()))

    @property
    def in_flight(self) -> int:
        """Calls running, on streams winding down too (the idle-recycle check counts them)."""
        return sum(c.in_flight for c in (*self.streams, *self._leaving.values()))

    @property
    def connected(self) -> bool:
        return any(c.connected for c in self.streams)

    def schedulers(self) -> list[str]:
        return sorted(self._clients)

    async def wait_connected(self, timeout: float) -> None:
        async def any_connected() -> None:
            await self._found.wait()
            while not self.connected:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(any_connected(), timeout)

    def set_capacity(self, capacity: int) -> None:
        self.capacity = capacity
        self._share()

    async def run(self) -> None:
        """Follows the schedulers in the registry until stop()."""
        while not self._stopped.is_set():
            try:
                await self._follow(await self._discover())
            except (LookupError, RegistryError, OSError) as e:
                log.warning("looking up schedulers failed (%s); keeping the %d streams open", e, len(self._clients))
            self._share()
            try:
                await asyncio.wait_for(self._stopped.wait(), self._refresh)
            except TimeoutError:
                pass

    async def stop(self, grace_s: float) -> None:
        """Every stream drains within grace_s: no new work, calls in flight finish and are reported;
        streams already winding down (their scheduler left) finish theirs within the same grace."""
        self._stopped.set()
        clients = list(self._clients.items())
        leaving = list(self._leaving)
        # Streams winding down finish within LEAVE_GRACE_S of their start; stop waits at most grace_s for them.
        waits = [asyncio.wait(leaving, timeout=grace_s)] if leaving else []
        await asyncio.gather(*(c.stop(grace_s) for _, (c, _) in clients), *waits, return_exceptions=True)
        for _, (_, task) in clients:
            task.cancel()
        late = list(self._leaving)  # still winding down after the grace (or begun meanwhile): ended now
        for task in late:
            task.cancel()
        await asyncio.gather(*(t for _, (_, t) in clients), *late, return_exceptions=True)

    async def _follow(self, addresses: list[str]) -> None:
        if not addresses:
            return  # the registry knows none right now: keep what is open
        wanted = set(addresses)
        for addr in sorted(wanted - set(self._clients)):
            client = LeaseClient(sender=self._sender, discover=_fixed(addr), capacity=self._split(len(wanted)),
                                 dispatcher_id=self.dispatcher_id, max_backoff_s=self._backoff,
                                 credentials=self._credentials, metadata=self._metadata,
                                 max_message_bytes=self._max_message, transport=self._transport)  # fmt: skip
            task = asyncio.create_task(client.run(), name=f"lease-stream-{addr}")
            self._clients[addr] = (client, task)
            log.info("dispatcher %s: scheduler %s found, opening a stream", self.dispatcher_id, addr)
        for addr in sorted(set(self._clients) - wanted):
            client, task = self._clients.pop(addr)
            log.info("dispatcher %s: scheduler %s gone, closing its stream", self.dispatcher_id, addr)
            leave = asyncio.create_task(self._leave(client, task), name=f"lease-stream-leave-{addr}")
            self._leaving[leave] = client
            leave.add_done_callback(self._left)
        self._share()
        self._found.set()

    async def _leave(self, client: LeaseClient, task: asyncio.Task) -> None:
        await client.stop(LEAVE_GRACE_S)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def _left(self, leave: asyncio.Task) -> None:
        client = self._leaving.pop(leave)
        self._gone_calls += client.calls_done

    def _split(self, n: int) -> int:
        return max(1, self.capacity // max(1, n))

    def _live(self) -> list[LeaseClient]:
        now = time.monotonic()
        live = []
        for addr, (client, _) in self._clients.items():
            if client.connected:
                self._down_since.pop(addr, None)
            elif now - self._down_since.setdefault(addr, now) >= DOWN_AFTER_S:
                continue
            live.append(client)
        for addr in set(self._down_since) - set(self._clients):
            del self._down_since[addr]
        return live

    def _share(self) -> None:
        share = self._split(len(self._live() or self.streams))
        for client in self.streams:
            client.set_capacity(share)


def _fixed(addr: str) -> Callable[[], Awaitable[str]]:
    async def discover() -> str:
        return addr

    return discover
