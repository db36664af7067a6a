"""How a LeaseClient reaches a scheduler: one Lease call, written to and read from.

`LeaseCall` is the little of `grpc.aio.StreamStreamCall` the client uses (write,
done_writing, read by iteration, initial_metadata, cancel). `grpc_transport`
opens it over a gRPC channel; `dev` can hand its own dispatcher a transport
that carries the same LeaseRequest/LeaseResponse messages to its scheduler's
Lease handler in memory (services/local_lease.py).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import AsyncIterator, Callable, Protocol

import grpc

from ..common.tls import aio_channel
from ..v1 import dispatch_service_pb2 as pb, dispatch_service_pb2_grpc as pb_grpc


class LeaseCall(Protocol):
    async def initial_metadata(self): ...
    async def write(self, request: pb.LeaseRequest) -> None: ...
    async def done_writing(self) -> None: ...
    def cancel(self) -> bool: ...
    def __aiter__(self) -> AsyncIterator[pb.LeaseResponse]: ...


# address -> an open Lease call for as long as the context lasts
Transport = Callable[[str], AbstractAsyncContextManager[LeaseCall]]


def grpc_transport(
    credentials: Callable[[], grpc.ChannelCredentials | None], metadata: tuple, options: list
) -> Transport:
    """A fresh channel per stream (TLS files read anew each time), the call on it."""

    @asynccontextmanager
    async def open_call(addr: str):
        async with aio_channel(addr, credentials(), options=options) as channel:
            yield pb_grpc.DispatchServiceStub(channel).Lease(metadata=metadata)

    return open_call
