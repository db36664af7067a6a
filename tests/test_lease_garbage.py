"""Malformed bytes inside a dispatcher's Lease stream: the stream ends with INVALID_ARGUMENT
(never UNKNOWN or INTERNAL) and a field violation, its session is gone, and the scheduler
keeps serving the other dispatchers and every other call."""

import asyncio

import grpc
import pytest

from notifyagent.v1 import dispatch_service_pb2 as dpb
from notifyagent.v1 import notify_pb2 as pb

LEASE = "/notifyagent.v1.DispatchService/Lease"


async def _lease_with(system, *frames: bytes) -> grpc.RpcError:
    call = system.channel.stream_stream(LEASE)(iter(frames), timeout=10)
    with pytest.raises(grpc.RpcError) as e:
        async for _ in call:
            pass
    return e.value


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff", b"\x0a\x05\x01", b"\x0a\x03\x0a\x01\xff"], ids=["tag", "truncated", "utf8"])
async def test_garbage_in_the_lease_stream_ends_it_with_invalid_argument(system, target, garbage):
    hello = dpb.LeaseRequest(hello=dpb.DispatcherHello(dispatcher_id="raw-1", version="t", capacity=4)).SerializeToString()
    for frames in ((garbage,), (hello, garbage)):  # as the first message, and after a good hello
        err = await _lease_with(system, *frames)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
        assert "cannot be decoded" in err.details()
    await asyncio.sleep(0.1)
    ids = [d.dispatcher_id for d in system.scheduler.engine.snapshot().dispatchers]
    assert not [i for i in ids if i.startswith("raw-1")], "the broken stream's session is gone"
    n = await system.create(target.url("/after"))  # the in-process dispatcher still leases and delivers
    await system.wait_state(n.id, pb.STATE_SUCCEEDED)
    assert await system.serving()
