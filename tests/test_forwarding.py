"""Router.forward and fan_out against a real peer gRPC server: the caller's `authorization`
goes along as is (nothing else of its metadata), the forward is marked, the caller's
deadline bounds the call, the peer's error comes back with its code, and a call that was
itself forwarded is never forwarded again."""

from __future__ import annotations

import grpc
import pytest
from notifyagent.common.grpcutil import create_server
from notifyagent.scheduler.api.routing import FORWARDED, Router
from notifyagent.scheduler.engine.errors import Unavailable
from notifyagent.scheduler.engine.ownership import Member, SoleOwnership
from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api, notify_service_pb2_grpc


class Peer(notify_service_pb2_grpc.NotifyServiceServicer):
    def __init__(self) -> None:
        self.seen: list[tuple[dict, float | None]] = []

    async def CancelNotify(self, request, context):
        self.seen.append((dict(context.invocation_metadata()), context.time_remaining()))
        if request.id == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "notify 'missing' not found")
        return api.CancelNotifyResponse(notify=pb.Notify(id=request.id, state=pb.STATE_CANCELLED))

    async def Trigger(self, request, context):
        self.seen.append((dict(context.invocation_metadata()), context.time_remaining()))
        return api.TriggerResponse(triggered=3)


class Context:
    """The caller's side of a handler, as grpc.aio gives it to a servicer."""

    def __init__(self, metadata, remaining: float | None) -> None:
        self._metadata, self._remaining = metadata, remaining
        self.aborted: tuple | None = None

    def invocation_metadata(self):
        return self._metadata

    def time_remaining(self):
        return self._remaining

    def set_trailing_metadata(self, md) -> None:
        pass

    async def abort(self, code, details):
        self.aborted = (code, details)
        raise grpc.RpcError(details)


class Others(SoleOwnership):
    def __init__(self, peer: Member) -> None:
        super().__init__(4, owner_id="me", address="127.0.0.1:1")
        self.peer = peer

    def members(self):
        return [Member("me", "127.0.0.1:1"), self.peer]


@pytest.fixture
async def peer():
    servicer = Peer()
    server, port, _ = create_server("127.0.0.1:0", [lambda s: notify_service_pb2_grpc.add_NotifyServiceServicer_to_server(servicer, s)], [])
    await server.start()
    router = Router(Others(Member("peer", f"127.0.0.1:{port}")))
    yield servicer, router, Member("peer", f"127.0.0.1:{port}")
    await router.close()
    await server.stop(0)


async def test_a_forward_carries_the_callers_token_and_deadline_and_is_marked(peer):
    servicer, router, member = peer
    ctx = Context((("authorization", "Bearer s3cret"), ("x-other", "no"), ("user-agent", "me")), 20.0)
    resp = await router.forward("CancelNotify", api.CancelNotifyRequest(id="n1"), ctx, member)
    assert resp.notify.state == pb.STATE_CANCELLED
    (metadata, remaining), = servicer.seen
    assert metadata["authorization"] == "Bearer s3cret" and metadata[FORWARDED] == "me"
    assert "x-other" not in metadata
    # gRPC carries a deadline as a timeout and the receiving side rounds it onto its own timer
    # (seen: 20.099 s for 20 s), so "bounded by the caller's" allows that rounding and no more.
    assert remaining is not None and 0 < remaining <= 20.5, "the caller's deadline bounds the forward"


async def test_the_owners_error_is_the_callers(peer):
    servicer, router, member = peer
    ctx = Context((), None)
    with pytest.raises(grpc.RpcError):
        await router.forward("CancelNotify", api.CancelNotifyRequest(id="missing"), ctx, member)
    assert ctx.aborted[0] == grpc.StatusCode.NOT_FOUND and "missing" in ctx.aborted[1]


async def test_a_forwarded_call_is_never_forwarded_again(peer):
    servicer, router, member = peer
    ctx = Context(((FORWARDED, "someone"),), 5.0)
    with pytest.raises(Unavailable):
        await router.forward("CancelNotify", api.CancelNotifyRequest(id="n1"), ctx, member)
    assert await router.fan_out("Trigger", api.TriggerRequest(trigger_key="k"), ctx) == []
    assert servicer.seen == []


async def test_fan_out_asks_every_other_scheduler(peer):
    servicer, router, member = peer
    got = await router.fan_out("Trigger", api.TriggerRequest(trigger_key="k"), Context((("authorization", "Bearer t"),), 5.0))
    assert [r.triggered for r in got] == [3]
    assert servicer.seen[0][0]["authorization"] == "Bearer t"


async def test_an_unreachable_peer_is_unavailable_not_a_crash(peer):
    servicer, router, member = peer
    with pytest.raises(Unavailable):
        await router.forward("CancelNotify", api.CancelNotifyRequest(id="n1"), Context((), 2.0), Member("gone", "127.0.0.1:9"))
