"""DispatchService.Lease: one stream per dispatcher, a reader task and a writer loop.

A dispatcher identity (the name of its token; one anonymous identity without
auth) holds at most `max_streams` streams and `max_credit` calls over all of
them; beyond that a stream is refused with RESOURCE_EXHAUSTED. With auth on,
a dispatcher's id is qualified by its token's name (`ID@NAME`), so no other
token can take over its session or report its leases."""

from __future__ import annotations

import asyncio
import logging

import grpc

from ...common import auth
from ...v1 import dispatch_service_pb2 as pb, dispatch_service_pb2_grpc as pb_grpc
from ...common.grpcutil import DEFAULT_MAX_MESSAGE_BYTES, runs_within
from . import convert
from ..engine.limits import bound_result
from ..engine.validate import check_hello, notify_size
from ..engine.core import Engine, ResultIn
from ..engine.retry import Outcome
from ..engine.sessions import Ack, Drain, Grant, Revoke, Session

log = logging.getLogger(__name__)


class DispatchServicer(pb_grpc.DispatchServiceServicer):
    def __init__(self, engine: Engine, *, max_streams: int = 64, max_credit: int = 16384,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:  # fmt: skip
        self._engine = engine
        self._budget = max_message_bytes - (64 << 10)  # what one LeaseResponse may hold, with room to spare
        self._max_streams = max_streams
        self._max_credit = max_credit
        self._streams: dict[str, int] = {}  # identity -> open streams
        self._held: dict[str, int] = {}  # identity -> capacity over its streams

    def _admit(self, identity: str, wanted: int) -> int:
        """The capacity a new stream of `identity` gets; 0 or less: none (a limit is reached)."""
        if self._streams.get(identity, 0) >= self._max_streams:
            return 0
        return min(wanted, self._max_credit - self._held.get(identity, 0))

    async def Lease(self, request_iterator, context):
        try:
            first = await request_iterator.__anext__()
        except StopAsyncIteration:
            return
        hello = first.hello
        if not first.HasField("hello"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first LeaseRequest must carry hello")
        if problem := check_hello(hello.dispatcher_id, hello.capacity):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        identity = auth.current().name
        capacity = self._admit(identity, hello.capacity)
        if capacity <= 0:
            who = f"token {identity!r}" if identity else "the anonymous dispatcher identity"
            log.warning("refused a Lease stream: %s holds %d streams and %d credit (NOTIFY_DISPATCHER_MAX_STREAMS=%d, "
                        "NOTIFY_DISPATCHER_MAX_CREDIT=%d)", who, self._streams.get(identity, 0),
                        self._held.get(identity, 0), self._max_streams, self._max_credit)  # fmt: skip
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{who} holds as many Lease streams or as much credit as the scheduler allows")  # fmt: skip
        self._streams[identity] = self._streams.get(identity, 0) + 1
        self._held[identity] = self._held.get(identity, 0) + capacity
        try:
            async for out in self._serve(first, request_iterator, context, identity, capacity):
                yield out
        finally:
            self._streams[identity] -= 1
            self._held[identity] -= capacity
            if not self._streams[identity]:
                del self._streams[identity], self._held[identity]

    async def _serve(self, first, request_iterator, context, identity: str, capacity: int):
        hello = first.hello
        session = self._engine.connect(
            dispatcher_id=f"{hello.dispatcher_id}@{identity}" if identity else hello.dispatcher_id,
            version=hello.version, capacity=capacity, credit=min(hello.credit, capacity),
        )  # fmt: skip
        if identity:
            log.info("dispatcher %s authenticated by token %s", hello.dispatcher_id, identity)
        await context.send_initial_metadata(())  # tells the dispatcher its hello was taken
        pending: list[asyncio.Future] = []  # the last results write this stream waits for
        reader = asyncio.create_task(self._read(first, request_iterator, session, pending))
        try:
            while (items := await session.next_batch()) is not None:
                for part in runs_within(items, self._budget, _grant_cost):  # never more than the dispatcher takes
                    yield _response(part)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            self._engine.disconnect(session)

    async def _read(self, first, request_iterator, session: Session, pending: list[asyncio.Future]) -> None:
        try:
            self._handle(first, session, pending)
            async for req in request_iterator:
                self._handle(req, session, pending)
        except asyncio.CancelledError:
            raise
        except grpc.RpcError as e:
            log.info("stream from dispatcher %s broke: %s", session.dispatcher_id, e)
        except Exception:  # the stream ends; the dispatcher reports its results again when it reconnects
            log.exception("requests from dispatcher %s not taken", session.dispatcher_id)
        finally:
            if pending:  # writes commit in order: once the last is done, every ack is out
                await asyncio.gather(*pending, return_exceptions=True)
            session.end_stream()

    def _handle(self, req: pb.LeaseRequest, session: Session, pending: list[asyncio.Future]) -> None:
        if req.results:  # committed with every other stream's results of this loop turn; acked after
            pending[:] = [self._engine.report(session, [_result(r) for r in req.results])]
        for ext in req.extensions:
            self._engine.extend(session, ext.lease_id, convert.seconds(ext.extend_by))
        if req.draining:
            self._engine.set_draining(session)
            session.send(Drain())  # confirms: every earlier grant is already on the stream
        elif req.credit:
            self._engine.add_credit(session, req.credit)


def _result(r: pb.LeaseResult) -> ResultIn:
    a = r.attempt
    outcome = Outcome(a.status_code, a.success, a.error, not r.permanent,
                      convert.seconds(r.retry_after) if r.HasField("retry_after") else None, r.deferred)  # fmt: skip
    # len() first, keys then values: a protobuf map read through the Mapping ABC costs more than the rest
    h = a.response_headers
    headers = {k: h[k] for k in h} if len(h) else None
    return bound_result(ResultIn(r.lease_id, outcome, convert.millis(a.start_time), convert.millis(a.end_time),
                                 a.response_snippet, headers))


def _grant_cost(item) -> int:
    """About the bytes an item takes in a LeaseResponse (validation keeps every single notify well
    below what the dispatcher accepts)."""
    return notify_size(item.lease.notify.spec) if isinstance(item, Grant) else 64


def _response(items) -> pb.LeaseResponse:
    out = pb.LeaseResponse()
    for item in items:
        if isinstance(item, Grant):
            lease = item.lease
            grant = out.grants.add(lease_id=lease.lease_id, attempt=lease.attempt)  # built in place: no copies
            convert.fill_grant_notify(grant.notify, lease.notify)
            deadline, (seconds, ms) = grant.deadline, divmod(lease.deadline_ms, 1000)  # FromMilliseconds' steps, fewer
            deadline.seconds = seconds
            deadline.nanos = ms * 1_000_000
        elif isinstance(item, Ack):
            out.acked_lease_ids.append(item.lease_id)
        elif isinstance(item, Revoke):
            out.revoked_lease_ids.append(item.lease_id)
        elif isinstance(item, Drain):
            out.drain = True
    return out
