"""DispatchService.Lease: one stream per dispatcher, a reader task and a writer loop."""

from __future__ import annotations

import asyncio
import logging

import grpc

from ...v1 import dispatch_service_pb2 as pb, dispatch_service_pb2_grpc as pb_grpc
from ...common.grpcutil import DEFAULT_MAX_MESSAGE_BYTES
from . import convert
from ..engine.validate import bound_result, check_hello, notify_size
from ..engine.core import Engine, ResultIn
from ..engine.retry import Outcome
from ..engine.sessions import Ack, Drain, Grant, Revoke, Session

log = logging.getLogger(__name__)


class DispatchServicer(pb_grpc.DispatchServiceServicer):
    def __init__(self, engine: Engine, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self._engine = engine
        self._budget = max_message_bytes - (64 << 10)  # what one LeaseResponse may hold, with room to spare

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
        session = self._engine.connect(
            dispatcher_id=hello.dispatcher_id, version=hello.version, capacity=hello.capacity, credit=hello.credit
        )
        await context.send_initial_metadata(())  # tells the dispatcher its hello was taken
        pending: set[asyncio.Task] = set()
        reader = asyncio.create_task(self._read(first, request_iterator, session, pending))
        try:
            while (items := await session.next_batch()) is not None:
                for part in _split(items, self._budget):
                    yield _response(part)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            self._engine.disconnect(session)

    async def _read(self, first, request_iterator, session: Session, pending: set[asyncio.Task]) -> None:
        try:
            self._handle(first, session, pending)
            async for req in request_iterator:
                self._handle(req, session, pending)
        except asyncio.CancelledError:
            raise
        except grpc.RpcError as e:
            log.info("stream from dispatcher %s broke: %s", session.dispatcher_id, e)
        finally:
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            session.end_stream()

    def _handle(self, req: pb.LeaseRequest, session: Session, pending: set[asyncio.Task]) -> None:
        if req.results:
            task = asyncio.create_task(self._engine.complete(session, [_result(r) for r in req.results]))
            pending.add(task)
            task.add_done_callback(lambda t: _settled(t, pending))
        for ext in req.extensions:
            self._engine.extend(session, ext.lease_id, convert.seconds(ext.extend_by))
        if req.draining:
            self._engine.set_draining(session)
            session.send(Drain())  # confirms: every earlier grant is already on the stream
        elif req.credit:
            self._engine.add_credit(session, req.credit)


def _settled(task: asyncio.Task, pending: set[asyncio.Task]) -> None:
    """Forgets a finished results task and says why it failed (the dispatcher reports again)."""
    pending.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("results not committed: %s", task.exception())


def _result(r: pb.LeaseResult) -> ResultIn:
    a = r.attempt
    outcome = Outcome(
        status_code=a.status_code,
        success=a.success,
        error=a.error,
        no_answer_retryable=not r.permanent,
        retry_after_s=convert.seconds(r.retry_after) if r.HasField("retry_after") else None,
        deferred=r.deferred,
    )
    return bound_result(ResultIn(r.lease_id, outcome, convert.millis(a.start_time), convert.millis(a.end_time),
                                 a.response_snippet, dict(a.response_headers)))


def _split(items: list, budget: int):
    """The items in runs whose grants stay within budget bytes: a response never exceeds
    what the dispatcher accepts (validation keeps every single notify well below it)."""
    run, size = [], 0
    for item in items:
        cost = notify_size(item.lease.notify.spec) if isinstance(item, Grant) else 64
        if run and size + cost > budget:
            yield run
            run, size = [], 0
        run.append(item)
        size += cost
    if run:
        yield run


def _response(items) -> pb.LeaseResponse:
    out = pb.LeaseResponse()
    for item in items:
        if isinstance(item, Grant):
            lease = item.lease
            out.grants.append(
                pb.LeaseGrant(
                    lease_id=lease.lease_id,
                    notify=convert.grant_notify(lease.notify),
                    attempt=lease.attempt,
                    deadline=convert.timestamp(lease.deadline_ms),
                )
            )
        elif isinstance(item, Ack):
            out.acked_lease_ids.append(item.lease_id)
        elif isinstance(item, Revoke):
            out.revoked_lease_ids.append(item.lease_id)
        elif isinstance(item, Drain):
            out.drain = True
    return out
