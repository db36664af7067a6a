"""Routing between schedulers sharing one store: any scheduler answers every RPC.

A call for a partition another scheduler owns is forwarded to it, with the
caller's `authorization` metadata as is and what is left of the caller's
deadline; the owner's answer (or error, details included) goes back unchanged.
Trigger and CancelGroup fan out to every live scheduler and add up. A
forwarded call carries `notify-forwarded`: it is answered locally or refused
(UNAVAILABLE, retryable: ownership is moving), never forwarded again."""

from __future__ import annotations

import asyncio
import logging

import grpc

from ...common.config import Settings
from ...common.grpcutil import DEFAULT_MAX_MESSAGE_BYTES, message_options
from ...common.tls import aio_channel, channel_credentials
from ...v1 import admin_service_pb2_grpc, notify_service_pb2_grpc
from ..engine.errors import Unavailable
from ..engine.ownership import Member, Ownership

log = logging.getLogger(__name__)
FORWARDED = "notify-forwarded"
PASSED_ON = ("authorization",)  # caller metadata a forwarded call carries
DEFAULT_TIMEOUT_S = 30.0


class Router:
    """settings: NOTIFY_TLS_CA (and NOTIFY_TLS_CERT/KEY under mTLS) make peer channels TLS, as
    dispatchers' are; without them, plaintext."""

    def __init__(self, ownership: Ownership, settings: Settings | None = None) -> None:
        self._own = ownership
        self._settings = settings
        self._channels: dict[str, grpc.aio.Channel] = {}

    @property
    def owner_id(self) -> str:
        return self._own.owner_id

    @property
    def address(self) -> str:
        return self._own.address

    @staticmethod
    def forwarded(context) -> bool:
        return any(k == FORWARDED for k, _ in (context.invocation_metadata() or ()))

    async def owner(self, partition: int) -> Member | None:
        """The scheduler owning `partition` (-1: any other live one), or None when it is this one.
        The view of the last ownership tick is read again from the store when it knows no owner."""
        if partition < 0 and not self.others() or partition >= 0 and self._own.owner_of(partition) is None:
            await self._own.refresh()
        if partition < 0:
            others = self.others()
            if not others:
                raise Unavailable("this scheduler owns no partitions yet and no other is live; retry shortly")
            return others[hash(asyncio.current_task()) % len(others)]
        m = self._own.owner_of(partition)
        if m is None:
            raise Unavailable(f"no scheduler owns partition {partition} right now (failing over); retry shortly")
        return None if m.owner == self._own.owner_id else m

    def others(self) -> list[Member]:
        return [m for m in self._own.members() if m.owner != self._own.owner_id and m.address]

    async def forward(self, method: str, request, context, member: Member, *, admin: bool = False):
        """Calls `method` on `member` with the caller's credentials and deadline; its error is the caller's."""
        if self.forwarded(context):
            raise Unavailable("partition ownership is moving between schedulers; retry shortly")
        stub = self._stub(member.address, admin)
        try:
            return await getattr(stub, method)(request, **self._passed_on(context))
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:  # unreachable, or it answered so: retry
                raise Unavailable(f"scheduler {member.address} (owner of that partition): {e.details()}") from None
            trailing = [(k, v) for k, v in (e.trailing_metadata() or ()) if k == "grpc-status-details-bin"]
            if trailing:
                context.set_trailing_metadata(tuple(trailing))
            await context.abort(e.code(), e.details() or "")

    async def fan_out(self, method: str, request, context, *, admin: bool = False) -> list:
        """`method` on every other live scheduler at once; answers of those that could not be reached are
        left out (their partitions expire and are taken over)."""
        if self.forwarded(context):
            return []
        members = self.others()
        passed_on = self._passed_on(context)
        calls = [getattr(self._stub(m.address, admin), method)(request, **passed_on) for m in members]
        out = []
        for m, got in zip(members, await asyncio.gather(*calls, return_exceptions=True)):
            if isinstance(got, grpc.aio.AioRpcError):
                if got.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    await context.abort(got.code(), got.details() or "")
                log.warning("%s on scheduler %s failed: %s", method, m.address, got.details())
                continue
            if isinstance(got, BaseException):
                raise got
            out.append(got)
        return out

    def _passed_on(self, context) -> dict:
        """What a call to a peer takes from the caller's: its credentials and what is left of its
        deadline, marked as forwarded by this scheduler."""
        left = context.time_remaining()
        timeout = DEFAULT_TIMEOUT_S if left is None or left > 1e6 else max(left, 0.001)
        metadata = [(k, v) for k, v in (context.invocation_metadata() or ()) if k in PASSED_ON]
        metadata.append((FORWARDED, self._own.owner_id))
        return {"timeout": timeout, "metadata": metadata}

    def _stub(self, address: str, admin: bool):
        ch = self._channels.get(address)
        if ch is None:
            creds = channel_credentials(self._settings) if self._settings is not None else None
            limit = self._settings.max_message_bytes if self._settings is not None else DEFAULT_MAX_MESSAGE_BYTES
            ch = self._channels[address] = aio_channel(address, creds, options=message_options(limit))  # peers take what we take
        return (admin_service_pb2_grpc.AdminServiceStub if admin else notify_service_pb2_grpc.NotifyServiceStub)(ch)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)
