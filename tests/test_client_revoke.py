"""The lease client and revokes that arrive with their grant."""

import asyncio
from notifyagent.dispatcher.client import LeaseClient
from notifyagent.v1 import dispatch_service_pb2 as dpb, notify_pb2 as pb


class Recorder:
    def __init__(self): self.sent = []
    async def send(self, call):
        self.sent.append(call)
        raise asyncio.CancelledError  # stop here; we only care whether the call was started


async def test_a_grant_revoked_in_the_same_message_is_not_sent():
    rec = Recorder()
    c = LeaseClient(sender=rec, discover=None, capacity=4)
    g = dpb.LeaseGrant(lease_id="L1", attempt=1,
                       notify=pb.Notify(id="N1", request=pb.HttpRequest(method=pb.HTTP_METHOD_POST, url="https://example.com/")))
    # engine: _grant_ready puts Grant(L1) in the outbox; CancelNotify then puts Revoke(L1); the writer batches both
    c._on_response(dpb.LeaseResponse(grants=[g], revoked_lease_ids=["L1"]))
    await asyncio.sleep(0.01)
    assert rec.sent == [], "the cancelled notify's call was made: revokes are applied before grants"


async def test_a_large_grant_message_begins_its_calls_a_few_per_loop_turn():
    """The first calls of a burst are prepared and written before the rest are prepared."""
    from notifyagent.dispatcher.client import STARTS_PER_TURN

    loop = asyncio.get_running_loop()
    turn = 0

    def tick():
        nonlocal turn
        turn += 1
        if turn < 100:
            loop.call_soon(tick)

    class Turns:
        def __init__(self): self.began = []
        async def send(self, call):
            self.began.append(turn)
            raise asyncio.CancelledError

    rec = Turns()
    c = LeaseClient(sender=rec, discover=None, capacity=256)
    grants = [dpb.LeaseGrant(lease_id=f"L{i}", attempt=1,
                             notify=pb.Notify(id=f"N{i}", request=pb.HttpRequest(method=pb.HTTP_METHOD_POST, url="https://example.com/")))
              for i in range(200)]  # fmt: skip
    tick()
    c._on_response(dpb.LeaseResponse(grants=grants))
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(rec.began) == 200
    per_turn = {t: rec.began.count(t) for t in set(rec.began)}
    assert max(per_turn.values()) <= STARTS_PER_TURN and len(per_turn) >= 200 // STARTS_PER_TURN
