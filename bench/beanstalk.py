"""A tiny asyncio beanstalkd protocol client for the baseline harness.

Only what the baselines use: put, reserve (with timeout), delete, use, watch.
One command at a time per connection, as beanstalkd's protocol expects
(replies come back in order). The producers that stand for "a service using
beanstalkd" use greenstalk from PyPI; this client is for the asyncio
consumers (and for loading a million jobs quickly in `pending`).
"""

from __future__ import annotations

import asyncio


class BeanstalkError(Exception):
    pass


class AsyncBeanstalk:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._r, self._w = reader, writer

    @classmethod
    async def connect(cls, host: str = "127.0.0.1", port: int = 11300) -> "AsyncBeanstalk":
        r, w = await asyncio.open_connection(host, port)
        return cls(r, w)

    async def close(self) -> None:
        self._w.close()
        try:
            await self._w.wait_closed()
        except (ConnectionError, OSError):
            pass

    async def _line(self) -> bytes:
        return (await self._r.readuntil(b"\r\n"))[:-2]

    async def put(self, body: bytes, *, pri: int = 1024, delay: int = 0, ttr: int = 60) -> int:
        self._w.write(b"put %d %d %d %d\r\n%s\r\n" % (pri, delay, ttr, len(body), body))
        line = await self._line()
        if not line.startswith(b"INSERTED "):
            raise BeanstalkError(line.decode())
        return int(line[9:])

    def put_nowait(self, body: bytes, *, pri: int = 1024, delay: int = 0, ttr: int = 60) -> None:
        """Pipelined put: write now, read the answer later with `answer()`."""
        self._w.write(b"put %d %d %d %d\r\n%s\r\n" % (pri, delay, ttr, len(body), body))

    async def answer(self) -> bytes:
        return await self._line()

    def reserve(self, timeout: int | None = None):
        """Writes the reserve command now; the returned awaitable reads its answer."""
        self._w.write(b"reserve\r\n" if timeout is None else b"reserve-with-timeout %d\r\n" % timeout)
        return self._reserved()

    async def _reserved(self) -> tuple[int, bytes] | None:
        line = await self._line()
        if line.startswith(b"RESERVED "):
            _, jid, size = line.split()
            data = await self._r.readexactly(int(size) + 2)
            return int(jid), data[:-2]
        if line in (b"TIMED_OUT", b"DEADLINE_SOON"):
            return None
        raise BeanstalkError(line.decode())

    async def delete(self, jid: int) -> None:
        self._w.write(b"delete %d\r\n" % jid)
        line = await self._line()
        if line != b"DELETED":
            raise BeanstalkError(line.decode())

    async def delete_and_reserve(self, jid: int, timeout: int | None = None) -> tuple[int, bytes] | None:
        """delete, then reserve, in one write (two answers, in order): one round trip per job."""
        self._w.write(b"delete %d\r\n" % jid)
        job = self.reserve(timeout)  # writes the reserve command at once
        line = await self._line()
        if line != b"DELETED":
            raise BeanstalkError(line.decode())
        return await job

    async def use(self, tube: str) -> None:
        self._w.write(b"use %s\r\n" % tube.encode())
        await self._line()

    async def watch(self, tube: str) -> None:
        self._w.write(b"watch %s\r\n" % tube.encode())
        await self._line()
