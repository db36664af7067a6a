"""A connected dispatcher as the scheduler sees it: credit and an outbox.

The engine puts into the outbox; the stream's writer is its one consumer
(`next_batch`); what never left when the session closes comes back from
`close()`, for the engine to put back in the ready queue."""

from __future__ import annotations

import asyncio
from collections import deque
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
    writer sends everything waiting in one message."""

    dispatcher_id: str
    version: str
    capacity: int
    credit: int
    connect_ms: int
    closed: bool = False
    # A lease of this stream expired without a result: it gets no grants until it reports one,
    # so a stream that takes grants and neither reads nor reports loses them once, not forever.
    stalled: bool = False
    draining: bool = False  # takes no more grants (it said so, or an operator drained it)
    _outbox: deque = field(default_factory=deque, init=False, repr=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    def send(self, item: Outgoing) -> None:
        if not self.closed:
            self._outbox.append(item)
            self._wake.set()

    def end_stream(self) -> None:
        """The stream is over (the dispatcher's side ended): the writer stops after what is queued."""
        self._outbox.append(None)  # the end mark: the writer stops here
        self._wake.set()

    def take(self) -> list[Outgoing] | None:
        """Everything waiting to be sent, up to the end mark ([] if nothing); None at the end."""
        box = self._outbox
        if box and box[0] is None:
            return None
        items = []
        while box and box[0] is not None:
            items.append(box.popleft())
        return items

    async def next_batch(self) -> list[Outgoing] | None:
        """Waits for something to send; None when the stream is over."""
        while True:
            items = self.take()
            if items is None or items:
                return items
            self._wake.clear()
            await self._wake.wait()

    def close(self) -> list[Lease]:
        """Ends the session and its writer; returns the leases whose grants never left."""
        self.closed = True
        unsent = [item.lease for item in self._outbox if isinstance(item, Grant)]
        self._outbox.clear()
        self._outbox.append(None)  # the end mark: the writer stops here
        self._wake.set()
        return unsent
