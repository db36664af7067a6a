"""A connected dispatcher as the scheduler sees it: credit and an outbox."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import NamedTuple

from .leases import Lease


class Grant(NamedTuple):
    lease: Lease


class Ack(NamedTuple):
    lease_id: str


class Revoke(NamedTuple):
    lease_id: str


class Drain(NamedTuple):
    pass


Outgoing = Grant | Ack | Revoke | Drain


@dataclass(eq=False)
class Session:
    """One Lease stream. The engine never grants more than `credit`; the stream's
    writer drains `outbox` and sends everything waiting in one message."""

    dispatcher_id: str
    version: str
    capacity: int
    credit: int
    connect_ms: int
    outbox: asyncio.Queue[Outgoing] = field(default_factory=asyncio.Queue)
    closed: bool = False
    # A lease of this stream expired without a result: it gets no grants until it reports one,
    # so a stream that takes grants and neither reads nor reports loses them once, not forever.
    stalled: bool = False

    def close(self) -> None:
        """Ends the stream's writer (None is its end-of-stream mark)."""
        self.closed = True
        self.outbox.put_nowait(None)

    def send(self, item: Outgoing) -> None:
        if not self.closed:
            self.outbox.put_nowait(item)
