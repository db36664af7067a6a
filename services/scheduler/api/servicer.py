"""NotifyService and AdminService: protobuf in, domain calls, protobuf out.

Domain errors become gRPC status codes here and nowhere else."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import functools
from typing import Callable
import logging

from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ... import __version__
from ...common import auth
from ...common.sealing import ALWAYS_SECRET
from ...v1 import admin_service_pb2 as admin_pb, admin_service_pb2_grpc as admin_grpc
from ...v1 import notify_service_pb2 as api, notify_service_pb2_grpc as api_grpc
from . import convert
from ..engine.core import Engine
from ..engine.operations import Created, Operations
from ..engine.errors import FailedPrecondition, InvalidArgument, NotFound, NotifyError, NotOwner, Unavailable
from ..engine.model import ListFilter, NewGroup, State
from ..engine.validate import notify_size
from .routing import Router

log = logging.getLogger(__name__)

_CODES = {
    InvalidArgument: code_pb2.INVALID_ARGUMENT,
    NotFound: code_pb2.NOT_FOUND,
    FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    Unavailable: code_pb2.UNAVAILABLE,
}
MAX_PAGE = 1000
MAX_DISPATCHER_ID = 256
DEFAULT_PAGE = 50


def to_status(e: NotifyError) -> status_pb2.Status:
    code = next((c for cls, c in _CODES.items() if isinstance(e, cls)), code_pb2.INTERNAL)
    status = status_pb2.Status(code=code, message=str(e))
    if isinstance(e, InvalidArgument):
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in e.violations
                ]
            )
        )
        status.details.append(detail)
    return status


def maps_errors(handler):
    """Domain errors become status codes; NotOwner forwards the same call to the partition's owner."""

    @functools.wraps(handler)
    async def wrapper(self, request, context):
        try:
            try:
                return await handler(self, request, context)
            except NotOwner as e:
                member = await self._router.owner(e.partition) if self._router else None
                if member is None:
                    raise Unavailable("partition ownership moved while answering; retry") from None
                return await self._router.forward(handler.__name__, request, context, member,
                                                  admin=isinstance(self, AdminServicer))  # fmt: skip
        except NotifyError as e:
            await context.abort_with_status(rpc_status.to_status(to_status(e)))

    return wrapper


class NotifyServicer(api_grpc.NotifyServiceServicer):
    """secret: header names whose values read <redacted> in every answer (sealing.secret_names)."""

    def __init__(self, operations: Operations, router: Router | None = None, *, secret: frozenset[str] = ALWAYS_SECRET) -> None:
        self._ops = operations
        self._router = router
        self._secret = secret

    def _out(self, n, *, with_attempts: bool = True):
        return convert.notify_to_proto(n, with_attempts=with_attempts, secret=self._secret)

    @maps_errors
    async def CreateNotify(self, request, context):
        new = convert.incoming(request.notify, request.request_id, now_ms=self._ops.clock.now_ms(),
                               created_by=auth.current().name)  # fmt: skip
        (got,) = await self._ops.create_incoming([new])
        out = api.CreateNotifyResponse()
        self._fill(out.notify, new, got)
        return out

    def _fill(self, out, new, got) -> None:
        """The answer for one created notify (or the first one with its request_id), in place."""
        if isinstance(got, Created):
            convert.fill_created(out, new, got, self._secret)
        else:
            convert.fill_notify(out, got, secret=self._secret)

    @maps_errors
    async def BatchCreateNotify(self, request, context):
        now = self._ops.clock.now_ms()
        by = auth.current().name
        news = [convert.incoming(r.notify, r.request_id, now_ms=now, created_by=by) for r in request.requests]
        group = NewGroup(request.group_key, request.group_callback_url)
        group = group if group.key or group.callback_url else None
        if self._router is None:
            stored = await self._ops.create_incoming(news, batch=True, group=group)
            # The answer serialized notify by notify and parsed once, in C.
            secret = self._secret
            return api.BatchCreateNotifyResponse.FromString(
                convert.answer_bytes([convert.created_bytes(new, got, secret) for new, got in zip(news, stored)]))
        return await self._batch_routed(request, context, news, group)

    async def _batch_routed(self, request, context, news, group):
        """Items whose ordering key's partition another scheduler owns go to it, a sub-batch per
        owner (with the same group); the rest are created here; answers keep the request's order."""
        owners: dict[str, tuple] = {}  # owner -> (member, [indexes])
        local = []
        for i, new in enumerate(news):
            try:
                self._ops.partition_for(new)
                local.append(i)
            except NotOwner as e:
                member = await self._router.owner(e.partition)
                if member is None:
                    raise Unavailable("partition ownership moved while answering; retry") from None
                owners.setdefault(member.owner, (member, []))[1].append(i)
        out: list = [None] * len(news)
        if local:
            stored = await self._ops.create_incoming([news[i] for i in local], batch=True, group=group)
            for i, got in zip(local, stored):
                out[i] = api_notify = convert.pb.Notify()
                self._fill(api_notify, news[i], got)
        for member, idx in owners.values():
            sub = api.BatchCreateNotifyRequest(requests=[request.requests[i] for i in idx], group_key=request.group_key,
                                               group_callback_url=request.group_callback_url)  # fmt: skip
            resp = await self._router.forward("BatchCreateNotify", sub, context, member)
            for i, n in zip(idx, resp.notifies):
                out[i] = n
        return api.BatchCreateNotifyResponse(notifies=out)

    @maps_errors
    async def Trigger(self, request, context):
        delay = convert.seconds(request.delay) if request.HasField("delay") else 0.0
        triggered = await self._ops.trigger(request.trigger_key, delay)
        if self._router is not None:  # every other scheduler fires what waits in its partitions
            triggered += sum(r.triggered for r in await self._router.fan_out("Trigger", request, context))
        return api.TriggerResponse(triggered=triggered)

    @maps_errors
    async def GetNotify(self, request, context):
        return api.GetNotifyResponse(notify=self._out(await self._ops.get(request.id)))

    @maps_errors
    async def ListNotifies(self, request, context):
        if request.page_size < 0 or request.page_size > MAX_PAGE:
            raise InvalidArgument([("page_size", f"must be between 0 and {MAX_PAGE}")])
        size = request.page_size or DEFAULT_PAGE
        after = _decode_token(request.page_token)
        if request.state and request.state not in State.__members__.values():
            raise InvalidArgument([("state", f"unknown state {request.state}")])
        f = ListFilter(
            state=State(request.state) if request.state else None,
            queue=request.queue,
            trigger_key=request.trigger_key,
            ordering_key=request.ordering_key,
            group_key=request.group_key,
            **_label_filter(request.label),
        )
        items = await self._ops.list(f, after_id=after, limit=size + 1)
        page, room = [], self._ops.limits.max_notify_bytes
        for n in items[:size]:  # a page never outgrows a message: big notifies make short pages
            room -= notify_size(n.spec)
            if room < 0 and page:
                break
            page.append(n)
        token = _encode_token(page[-1].id) if len(items) > len(page) else ""
        return api.ListNotifiesResponse(
            notifies=[self._out(n, with_attempts=False) for n in page], next_page_token=token
        )

    @maps_errors
    async def CancelNotify(self, request, context):
        return api.CancelNotifyResponse(notify=self._out(await self._ops.cancel(request.id)))

    @maps_errors
    async def UpdateNotify(self, request, context):
        paths = {"schedule" if p in ("deliver_at", "delay", "trigger_key") else p for p in request.update_mask.paths}
        given = convert.new_notify(request.notify, "", now_ms=self._ops.clock.now_ms())
        n = await self._ops.update(request.notify.id, paths, given)
        return api.UpdateNotifyResponse(notify=self._out(n))

    @maps_errors
    async def RetryNotify(self, request, context):
        return api.RetryNotifyResponse(notify=self._out(await self._ops.retry(request.id)))

    @maps_errors
    async def GetGroup(self, request, context):
        return api.GetGroupResponse(group=convert.group_to_proto(await self._ops.group(request.group_key)))

    @maps_errors
    async def CancelGroup(self, request, context):
        cancelled, group = await self._ops.cancel_group(request.group_key)
        if self._router is not None:  # members in other schedulers' partitions
            more = await self._router.fan_out("CancelGroup", request, context)
            if more:
                cancelled += sum(r.cancelled for r in more)
                group = await self._ops.group(request.group_key)
        return api.CancelGroupResponse(cancelled=cancelled, group=convert.group_to_proto(group))


def _label_filter(label: str) -> dict[str, str | None]:
    """ListNotifiesRequest.label, "key=value" or "key", as ListFilter fields."""
    if not label:
        return {}
    key, eq, value = label.partition("=")
    if not 1 <= len(key) <= 63 or len(value) > 256 or any(c < " " or c == "\x7f" for c in label):
        raise InvalidArgument([("label", "must be key=value or key: a key of 1-63 characters, a value of at most 256, "
                                         "no control characters")])  # fmt: skip
    return {"label_key": key, "label_value": value if eq else None}


def _encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(f"v1:{last_id}".encode()).decode()


def _decode_token(token: str) -> str:
    if not token:
        return ""
    if len(token) > 512:
        raise InvalidArgument([("page_token", "is not a token this server gave out")])
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        text = ""
    if not text.startswith("v1:"):
        raise InvalidArgument([("page_token", "is not a token this server gave out")])
    return text[3:]


class AdminServicer(admin_grpc.AdminServiceServicer):
    def __init__(self, engine: Engine, router: Router | None = None, *, shutdown: Callable[[], None] = lambda: None) -> None:
        self._engine = engine
        self._router = router
        self._shutdown = shutdown  # asks the process to stop gracefully, as SIGTERM does

    async def _queue_stats(
        self, names: list[str] | None = None, counts: dict[tuple[str, State], int] | None = None
    ) -> list[admin_pb.QueueStats]:
        if counts is None:
            counts = await self._engine.counts()
        snap = self._engine.snapshot()
        if names is None:
            names = sorted({q for q, _ in counts} | set(snap.ready_queues) | set(snap.queue_configs))
        out = []
        for name in names:
            by_state = {s: c for (q, s), c in counts.items() if q == name}
            cfg = snap.queue_config(name)
            out.append(admin_pb.QueueStats(
                name=name,
                pending=by_state.get(State.PENDING, 0),
                in_flight=snap.in_flight.get(name, 0),
                scheduled=sum(by_state.get(s, 0) for s in (State.SCHEDULED, State.RETRY_WAIT, State.WAITING_TRIGGER)),
                failed=by_state.get(State.FAILED, 0),
                succeeded=by_state.get(State.SUCCEEDED, 0),
                paused=cfg.paused, max_concurrent=cfg.max_concurrent, rate=cfg.rate, burst=cfg.burst,
            ))  # fmt: skip
        return out

    @maps_errors
    async def GetStatus(self, request, context):
        by_queue = await self._engine.counts()
        snap = self._engine.snapshot()
        counts: dict[State, int] = {}
        for (_, state), c in by_queue.items():
            counts[state] = counts.get(state, 0) + c
        resp = self._status(snap, counts, await self._queue_stats(counts=by_queue))
        if self._router is not None:  # counts come from the shared store; the rest adds up over schedulers
            resp.schedulers.append(admin_pb.SchedulerInfo(
                owner_id=self._router.owner_id, address=self._router.address, partitions=self._engine.partitions_held(),
                pid=resp.pid, sent_ok=snap.sent_ok, sent_failed=snap.sent_failed, dispatchers=len(snap.dispatchers),
                leases=snap.leases,
            ))  # fmt: skip
            for other in await self._router.fan_out("GetStatus", request, context, admin=True):
                resp.schedulers.extend(other.schedulers[:1])
                resp.sent_ok += other.sent_ok
                resp.sent_failed += other.sent_failed
                resp.dispatchers.extend(other.dispatchers)
                resp.wheel_size += other.wheel_size
                flying = {q.name: q.in_flight for q in other.queues}
                for q in resp.queues:
                    q.in_flight += flying.get(q.name, 0)
        return resp

    def _status(self, snap, counts, queues) -> admin_pb.GetStatusResponse:
        return admin_pb.GetStatusResponse(
            start_time=convert.timestamp(snap.start_ms),
            pid=os.getpid(),
            version=__version__,
            counts=[admin_pb.StateCount(state=int(s), count=c) for s, c in sorted(counts.items())],
            sent_ok=snap.sent_ok,
            sent_failed=snap.sent_failed,
            dispatchers=[
                admin_pb.DispatcherInfo(
                    dispatcher_id=d.dispatcher_id, version=d.version, capacity=d.capacity, credit=d.credit,
                    leases=d.leases, connect_time=convert.timestamp(d.connect_ms), draining=d.draining,
                )  # fmt: skip
                for d in snap.dispatchers
            ],
            queues=queues,
            wheel_size=snap.waiting,
            shutting_down=snap.shutting_down,
        )

    async def _change_queue(self, name: str, **changes) -> admin_pb.QueueStats:
        if not name:
            raise InvalidArgument([("name", "is required")])
        cfg = self._engine.queue_config(name)
        await self._engine.update_queue(dataclasses.replace(cfg, **changes), changes)  # those settings alone
        (stats,) = await self._queue_stats([name])
        return stats

    @maps_errors
    async def PauseQueue(self, request, context):
        return admin_pb.PauseQueueResponse(queue=await self._change_queue(request.name, paused=True))

    @maps_errors
    async def ResumeQueue(self, request, context):
        return admin_pb.ResumeQueueResponse(queue=await self._change_queue(request.name, paused=False))

    @maps_errors
    async def SetQueueLimits(self, request, context):
        stats = await self._change_queue(
            request.name, max_concurrent=request.max_concurrent, rate=request.rate, burst=request.burst
        )
        return admin_pb.SetQueueLimitsResponse(queue=stats)

    @maps_errors
    async def DrainDispatchers(self, request, context):
        if len(request.dispatcher_id) > MAX_DISPATCHER_ID:
            raise InvalidArgument([("dispatcher_id", f"must be at most {MAX_DISPATCHER_ID} characters")])
        told = self._engine.drain_dispatchers(request.dispatcher_id)
        if self._router is not None:  # a dispatcher streams from every scheduler: each stops granting to it
            if self._router.forwarded(context):
                return admin_pb.DrainDispatchersResponse(dispatcher_ids=told)  # not connected here is no error
            for other in await self._router.fan_out("DrainDispatchers", request, context, admin=True):
                told.extend(other.dispatcher_ids)
            told = list(dict.fromkeys(told))
        if request.dispatcher_id and not told:
            raise NotFound(f"dispatcher {request.dispatcher_id!r} is not connected")
        return admin_pb.DrainDispatchersResponse(dispatcher_ids=told)

    @maps_errors
    async def Shutdown(self, request, context):
        log.warning("Shutdown asked over AdminService: stopping gracefully")
        asyncio.get_running_loop().call_soon(self._shutdown)  # after this answer is on its way
        return admin_pb.ShutdownResponse()
