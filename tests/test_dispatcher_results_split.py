"""A dispatcher's unacked results are reported again on every new stream. Many of them (a long
scheduler outage, large response snippets) must go out in several LeaseRequests within
NOTIFY_MAX_MESSAGE_BYTES: one message over the limit is refused, and it would be refused again
on every reconnect, so the dispatcher could never report them."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from notifyagent.dispatcher.client import LeaseClient
from notifyagent.v1 import dispatch_service_pb2 as dpb, notify_pb2 as pb

LIMIT = 16 * 1024


class RecordingCall:
    """A Lease call that takes every request and never answers (the test stops it)."""

    def __init__(self) -> None:
        self.written: list[dpb.LeaseRequest] = []

    async def initial_metadata(self):
        return ()

    async def write(self, request: dpb.LeaseRequest) -> None:
        assert request.ByteSize() <= LIMIT, f"a LeaseRequest of {request.ByteSize()} bytes, over the {LIMIT} limit"
        self.written.append(request)

    async def done_writing(self) -> None:
        pass

    def cancel(self) -> bool:
        return True

    def __aiter__(self):
        return self

    async def __anext__(self):
        await asyncio.sleep(3600)


async def test_many_unacked_results_are_reported_again_in_messages_within_the_limit():
    call = RecordingCall()

    @asynccontextmanager
    async def transport(addr):
        yield call

    async def discover():
        return "local"

    client = LeaseClient(sender=None, discover=discover, capacity=4, max_message_bytes=LIMIT, transport=transport)
    for i in range(60):  # ~2 KB each: ~120 KB in all, 7 or more messages of 16 KiB
        result = dpb.LeaseResult(lease_id=f"lease-{i}", notify_id=f"n-{i}",
                                 attempt=pb.Attempt(number=1, status_code=500, response_snippet=b"x" * 2000))  # fmt: skip
        client._unacked[result.lease_id] = result
    run = asyncio.create_task(client.run())
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if sum(len(r.results) for r in call.written) >= 60:
                break
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    assert call.written[0].HasField("hello"), "the hello comes first"
    reported = [r.lease_id for req in call.written for r in req.results]
    assert sorted(reported) == sorted(f"lease-{i}" for i in range(60)), "every unacked result is reported once"
    assert len([req for req in call.written if req.results]) >= 7
