"""`dev`'s in-memory Lease transport: its own dispatcher's stream to its own scheduler.

The dispatcher writes the same LeaseRequest messages and reads the same
LeaseResponse messages it would over gRPC, and they go through the scheduler's
own Lease handler (DispatchServicer.Lease: the same hello, credit, grant, ack,
result and drain rules, the same per-identity stream and credit limits), run
as the principal the dispatcher's token names, exactly as the gRPC
interceptor would run it. Only HTTP/2 framing and (de)serialization are left
out: the messages are passed as objects, in order, one bounded queue each way
(a full queue holds its writer back, as HTTP/2 flow control would), and a
request larger than NOTIFY_MAX_MESSAGE_BYTES ends the stream with
RESOURCE_EXHAUSTED as gRPC's send limit does. The
dispatcher opens one of these for the scheduler of its own process and gRPC
streams for any other scheduler it finds (a shared PostgreSQL store).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

import grpc

from .common import auth
from .v1 import dispatch_service_pb2 as pb

log = logging.getLogger(__name__)
_END = object()
_WAKE = object()  # the reader's nudge: the stream has ended (see LocalLeaseCall._finish)
QUEUE_MESSAGES = 64  # messages each way not yet read before a writer waits


class LocalRpcError(grpc.RpcError):
    """How the stream ended when not cleanly: the code and details a gRPC client would see."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class _Context:
    """The part of grpc.aio.ServicerContext the Lease handler uses."""

    def __init__(self, metadata_sent: asyncio.Event) -> None:
        self._metadata_sent = metadata_sent

    async def send_initial_metadata(self, metadata) -> None:
        self._metadata_sent.set()

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata=()) -> None:
        raise LocalRpcError(code, details)


async def _read(queue: asyncio.Queue) -> AsyncIterator[pb.LeaseRequest]:
    while (item := await queue.get()) is not _END:
        yield item


class LocalLeaseCall:
    """One Lease stream in memory; the LeaseCall a LeaseClient writes to and reads from."""

    def __init__(self, handler: Callable, principal: Callable[[], auth.Principal], max_message_bytes: int) -> None:
        self._requests: asyncio.Queue = asyncio.Queue(QUEUE_MESSAGES)
        self._responses: asyncio.Queue = asyncio.Queue(QUEUE_MESSAGES)
        self._max_message = max_message_bytes
        self._outcome: object | None = None  # _END or the LocalRpcError the stream ended with
        self._metadata_sent = asyncio.Event()
        self._half_closed = False
        self._task = asyncio.create_task(self._serve(handler, principal), name="local-lease-stream")

    async def _serve(self, handler: Callable, principal: Callable[[], auth.Principal]) -> None:
        put = self._responses.put
        try:
            auth.run_as(principal())  # this task's context only, as the interceptor does per call
            async for response in handler(_read(self._requests), _Context(self._metadata_sent)):
                await put(response)
            self._finish(_END)
        except LocalRpcError as e:
            self._finish(e)
        except auth.AuthError as e:
            log.warning("refused the local Lease stream: %s: %s", e.code.name, e)
            self._finish(LocalRpcError(e.code, str(e)))
        except asyncio.CancelledError:
            self._finish(LocalRpcError(grpc.StatusCode.CANCELLED, "the stream was cancelled"))
            raise
        except Exception as e:  # the handler's bug: the dispatcher sees UNKNOWN, as over gRPC
            log.exception("local Lease stream failed")
            self._finish(LocalRpcError(grpc.StatusCode.UNKNOWN, f"{type(e).__name__}: {e}"))
        finally:
            self._metadata_sent.set()

    def _finish(self, outcome: object) -> None:
        """Ends the stream once: the reader takes what is queued, then sees `outcome`."""
        if self._outcome is None:
            self._outcome = outcome
            try:
                self._responses.put_nowait(_WAKE)  # a full queue needs none: its reader checks after each message
            except asyncio.QueueFull:
                pass

    async def initial_metadata(self) -> tuple:
        await self._metadata_sent.wait()
        return ()

    async def write(self, request: pb.LeaseRequest) -> None:
        if self._outcome is not None or self._task.done() or self._half_closed:
            raise asyncio.InvalidStateError("the Lease stream is finished or half-closed")
        size = request.ByteSize()
        if size > self._max_message:  # what gRPC's send limit does: the call ends, the reader sees why
            error = LocalRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  f"Sent message larger than max ({size} vs. {self._max_message})")  # fmt: skip
            self._finish(error)
            self._task.cancel()
            raise error
        await self._requests.put(request)

    async def done_writing(self) -> None:
        if not self._half_closed:
            self._half_closed = True
            await self._requests.put(_END)

    def cancel(self) -> bool:
        # The stream ends here too: a task cancelled before its first step never runs its own
        # finally, and a gRPC call that is cancelled always ends.
        self._finish(LocalRpcError(grpc.StatusCode.CANCELLED, "the stream was cancelled"))
        self._metadata_sent.set()
        return self._task.cancel()

    async def close(self) -> None:
        self.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def __aiter__(self) -> AsyncIterator[pb.LeaseResponse]:
        responses = self._responses
        while True:
            if self._outcome is not None and responses.empty():
                if isinstance(self._outcome, LocalRpcError):
                    raise self._outcome
                return
            item = await responses.get()
            if item is not _WAKE:
                yield item


def local_transport(
    handler: Callable, authorize: Callable[[tuple], auth.Principal], metadata: tuple, max_message_bytes: int
):  # -> stream.Transport for one address
    """Opens LocalLeaseCalls into `handler` (the scheduler's DispatchServicer.Lease), each run as
    authorize(metadata) names the caller (the dispatcher's token, checked like the interceptor does);
    max_message_bytes: the largest request taken (NOTIFY_MAX_MESSAGE_BYTES, as on the gRPC path)."""

    @asynccontextmanager
    async def open_call(addr: str):
        call = LocalLeaseCall(handler, lambda: authorize(metadata), max_message_bytes)
        try:
            yield call
        finally:
            await call.close()

    return open_call
