"""Horizon loading: what becomes due within the horizon moves from the store into memory.

The loader reads in (due_ms, id) order from a cursor, a page at a time, every
load_interval_s of the clock's time. A failed commit rewinds the cursor: the
loader reads the stored copies again."""

from __future__ import annotations

import asyncio
import logging

from .clock import wait_event
from .errors import Unavailable
from .memory import Memory

log = logging.getLogger(__name__)


class Loading(Memory):

    def _start_loader(self) -> None:
        self._loader = asyncio.create_task(self._load_loop(), name="horizon-loader")

    async def _load_loop(self) -> None:
        interval_ms = int(self._settings.load_interval_s * 1000)
        while not await wait_event(self._clock, self._stopping, interval_ms):
            try:
                await self.load()
            except Unavailable as e:
                log.error("loading due notifies failed, will try again: %s", e)

    async def load(self) -> None:
        """Moves what becomes due within the horizon from the store into memory now."""
        async with self._loading:
            await self._load_pages()

    async def _load_pages(self) -> None:
        until = self._clock.now_ms() + int(self._settings.horizon_s * 1000)
        await self._load_range(until, self.held_partitions())

    async def _load_range(self, until: int, partitions: frozenset[int] | None, after: tuple[int, str] | None = None) -> int:
        """Reads due work up to `until` into memory a page at a time while there is room; returns
        how many notifies came in. Without `after` it is the horizon loader: it reads from the
        cursor and moves it. With `after` (partitions just taken) the cursor is left alone, except
        that memory filling up moves it back to what is left unread, so the horizon loader pages
        that in as room frees, as it does its own."""
        loaded = 0
        horizon = after is None
        while True:
            if horizon:
                if self._rewind:
                    self._rewind, self._cursor = False, (0, "")
                after = self._cursor
            room = self._settings.max_in_memory - self._units
            if room <= 0 or self._starved:  # memory is full: due work waits in the store, paged in as room frees
                self._starved = True
                if not horizon:
                    self._cursor = min(self._cursor, (after[0], ""))
                return loaded
            limit = min(self._settings.load_batch, room)
            if horizon:
                self._cursor = (until, "")
            try:
                page = await self._store.load_due(after=after, until_ms=until, limit=limit, partitions=partitions)
            except BaseException:
                if horizon:
                    self._cursor = after  # nothing past `after` was read
                raise
            if len(page) == limit and horizon:
                self._cursor = (page[-1].due_ms, page[-1].id)
            for n in page:
                if self._fence.holds(self._fence.of(n.id)):
                    self.admit(n, loaded=True)  # refused once memory is full: the cursor moves back to it
                    loaded += 1
            if len(page) < limit or self._stopping.is_set() or self._starved:
                return loaded
            after = (page[-1].due_ms, page[-1].id)
            await asyncio.sleep(0)
