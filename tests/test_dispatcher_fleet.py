"""The dispatcher's fleet of Lease streams: a scheduler that leaves the registry is wound
down, and its calls in flight still count, are finished and reported."""

from __future__ import annotations

import asyncio
import time

from notifyagent.dispatcher.app import DispatcherApp
from notifyagent.registry import Node
from notifyagent.v1 import notify_pb2 as pb
from support import System, settings_for


class Listed:
    """A registry whose listed schedulers the test sets; registrations are accepted and forgotten."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)

    async def get_service(self, name: str) -> list[Node]:
        return [Node(id=a, address=a.rsplit(":", 1)[0], port=int(a.rsplit(":", 1)[1])) for a in self.addresses]

    async def register(self, *args, **kwargs) -> None:
        pass

    async def deregister(self, *args, **kwargs) -> None:
        pass


async def test_calls_of_a_scheduler_that_left_the_registry_count_and_finish_before_stop(tmp_path, target):
    system = System(settings_for(tmp_path), dispatchers=0)
    await system.start()
    listed = Listed(system.scheduler.address)
    d = DispatcherApp(settings_for(tmp_path, grace=5.0), registry=listed)
    await d.start()
    try:
        await d.client.wait_connected(10)
        target.respond("/slow", (200, 1.5))
        n = await system.create(target.url("/slow"))
        await target.wait_for(1)
        listed.addresses = ["127.0.0.1:9"]  # the scheduler is gone from the registry (it still answers)
        deadline = time.monotonic() + 5
        while system.scheduler.address in d.client.schedulers():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert d.client.in_flight == 1, "a call on a stream winding down is still running (idle-recycle counts it)"
        await d.stop()  # stops while that stream winds down: waits for its call, within the grace
        done = await system.get(n.id)
        assert done.state == pb.STATE_SUCCEEDED and len(done.attempts) == 1, pb.State.Name(done.state)
        assert d.client.calls_done == 1
    finally:
        await d.stop()
        await system.stop()
