"""`dev`'s in-memory Lease transport: its own dispatcher's stream to its own scheduler.

The dispatcher writes the same LeaseRequest messages and reads the same
LeaseResponse messages it would over gRPC, and they go through the scheduler's
own Lease handler (DispatchServicer.Lease: the same hello, credit, grant, ack,
result and drain rules, the same per-identity stream and credit limits), run
as the principal the dispatcher's token names, exactly as the gRPC
interceptor would run it. Only HTTP/2 framing and (de)serialization are left
out: the messages are passed as objects, in order, one queue each way. The
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

    def __init__(self, handler: Callable, principal: Callable[[], auth.Principal]) -> None:
        self._requests: asyncio.Queue = asyncio.Queue()
        self._responses: asyncio.Queue = asyncio.Queue()
        self._metadata_sent = asyncio.Event()
        self._half_closed = False
        self._task = asyncio.create_task(self._serve(handler, principal), name="local-lease-stream")

    async def _serve(self, handler: Callable, principal: Callable[[], auth.Principal]) -> None:
        put = self._responses.put_nowait
        try:
            auth.run_as(principal())  # this task's context only, as the interceptor does per call
            async for response in handler(_read(self._requests), _Context(self._metadata_sent)):
                put(response)
            put(_END)
        except LocalRpcError as e:
            put(e)
        except auth.AuthError as e:
            log.warning("refused the local Lease stream: %s: %s", e.code.name, e)
            put(LocalRpcError(e.code, str(e)))
        except asyncio.CancelledError:
            put(LocalRpcError(grpc.StatusCode.CANCELLED, "the stream was cancelled"))
            raise
        except Exception as e:  # the handler's bug: the dispatcher sees UNKNOWN, as over gRPC
            log.exception("local Lease stream failed")
            put(LocalRpcError(grpc.StatusCode.UNKNOWN, f"{type(e).__name__}: {e}"))
        finally:
            self._metadata_sent.set()

    async def initial_metadata(self) -> tuple:
        await self._metadata_sent.wait()
        return ()

    async def write(self, request: pb.LeaseRequest) -> None:
        if self._task.done() or self._half_closed:
            raise asyncio.InvalidStateError("the Lease stream is finished or half-closed")
        self._requests.put_nowait(request)

    async def done_writing(self) -> None:
        if not self._half_closed:
            self._half_closed = True
            self._requests.put_nowait(_END)

    def cancel(self) -> bool:
        return self._task.cancel()

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def __aiter__(self) -> AsyncIterator[pb.LeaseResponse]:
        while True:
            item = await self._responses.get()
            if item is _END:
                return
            if isinstance(item, LocalRpcError):
                raise item
            yield item


def local_transport(
    handler: Callable, authorize: Callable[[tuple], auth.Principal], metadata: tuple
):  # -> stream.Transport for one address
    """Opens LocalLeaseCalls into `handler` (the scheduler's DispatchServicer.Lease), each run as
    authorize(metadata) names the caller (the dispatcher's token, checked like the interceptor does)."""

    @asynccontextmanager
    async def open_call(addr: str):
        call = LocalLeaseCall(handler, lambda: authorize(metadata))
        try:
            yield call
        finally:
            await call.close()

    return open_call
