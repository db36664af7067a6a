"""The Lease stream as a dispatcher sees it, driven by hand: credit, deadlines, acks, reconnects."""

import asyncio
import time

import grpc
import pytest

from notifyagent.v1 import dispatch_service_pb2 as dpb, dispatch_service_pb2_grpc, notify_pb2 as pb, notify_service_pb2 as api
from support import System, settings_for


class RawDispatcher:
    """Speaks DispatchService.Lease directly, so a test decides every message."""

    def __init__(self, channel, dispatcher_id, capacity, credit=None):
        self.outq: asyncio.Queue = asyncio.Queue()
        self.grants: list[dpb.LeaseGrant] = []
        self.acked: list[str] = []
        self.revoked: list[str] = []
        self.arrived = asyncio.Event()
        self._probes = 0
        hello = dpb.DispatcherHello(dispatcher_id=dispatcher_id, capacity=capacity, credit=capacity if credit is None else credit)
        self.outq.put_nowait(dpb.LeaseRequest(hello=hello))
        self.call = dispatch_service_pb2_grpc.DispatchServiceStub(channel).Lease(self._requests())
        self.reader = asyncio.create_task(self._read())

    async def _requests(self):
        while True:
            item = await self.outq.get()
            if item is None:
                return
            yield item

    async def _read(self):
        try:
            async for resp in self.call:
                self.grants += resp.grants
                self.acked += resp.acked_lease_ids
                self.revoked += resp.revoked_lease_ids
                self.arrived.set()
        except grpc.RpcError:
            pass

    def send(self, **fields):
        self.outq.put_nowait(dpb.LeaseRequest(**fields))

    def report(self, grant, status=200, credit=1):
        attempt = pb.Attempt(number=grant.attempt, status_code=status, success=200 <= status < 300)
        now = time.time()
        attempt.start_time.FromNanoseconds(int(now * 1e9))
        attempt.end_time.FromNanoseconds(int(now * 1e9))
        self.send(results=[dpb.LeaseResult(lease_id=grant.lease_id, notify_id=grant.notify.id, attempt=attempt)], credit=credit)

    async def wait_grants(self, count, timeout=5.0):
        await self._wait(lambda: len(self.grants) >= count, timeout)
        return self.grants

    async def wait_acked(self, lease_id, timeout=5.0):
        await self._wait(lambda: lease_id in self.acked, timeout)

    async def wait_revoked(self, lease_id, timeout=5.0):
        await self._wait(lambda: lease_id in self.revoked, timeout)

    async def sync(self):
        """A round trip: a result for no lease, answered by its ack after whatever the
        scheduler sent for the messages before it (the stream keeps order)."""
        self._probes += 1
        probe = f"sync-{self._probes}"
        self.send(results=[dpb.LeaseResult(lease_id=probe, notify_id="sync", attempt=pb.Attempt(number=1))])
        await self.wait_acked(probe)

    async def _wait(self, done, timeout):
        deadline = time.monotonic() + timeout
        while not done():
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), max(0.01, deadline - time.monotonic()))

    async def close(self):
        self.call.cancel()
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)


@pytest.fixture
async def bare(tmp_path):
    """The scheduler with no dispatcher of its own."""
    s = System(settings_for(tmp_path, lease_margin=0.3, grace=0.2), dispatchers=0)
    await s.start()
    yield s
    await s.stop()


async def create_many(system, count, **fields):
    reqs = [api.CreateNotifyRequest(notify=pb.Notify(request=pb.HttpRequest(url=f"http://127.0.0.1:9/{i}"), **fields)) for i in range(count)]
    return list((await system.api.BatchCreateNotify(api.BatchCreateNotifyRequest(requests=reqs))).notifies)


async def test_scheduler_never_grants_more_than_the_credit(bare):
    d = RawDispatcher(bare.channel, "d1", capacity=3)
    await create_many(bare, 10)
    await d.wait_grants(3)
    await d.sync()
    assert len(d.grants) == 3
    d.report(d.grants[0], credit=1)
    await d.wait_grants(4)
    await d.sync()
    assert len(d.grants) == 4, "one result with one credit gives exactly one more grant"
    await d.close()


async def test_many_grants_are_batched_into_few_messages(bare):
    await create_many(bare, 200)
    d = RawDispatcher(bare.channel, "d1", capacity=200)
    messages = 0
    async for resp in d.call:  # read directly: count messages, not grants
        messages += 1
        d.grants += resp.grants
        if len(d.grants) == 200:
            break
    assert messages < 20
    await d.close()


async def test_expired_lease_counts_as_a_failed_attempt_and_is_granted_again(bare):
    n = pb.Notify(request=pb.HttpRequest(url="http://127.0.0.1:9/x"), retry=pb.RetryPolicy(max_attempts=3, multiplier=1))
    n.timeout.FromMilliseconds(200)
    n.retry.min_backoff.FromMilliseconds(10)
    n.retry.max_backoff.FromMilliseconds(10)
    created = (await bare.api.CreateNotify(api.CreateNotifyRequest(notify=n))).notify
    silent = RawDispatcher(bare.channel, "silent", capacity=1)
    await silent.wait_grants(1)
    assert silent.grants[0].attempt == 1
    await silent.close()  # says nothing: the lease runs out at timeout + margin
    live = RawDispatcher(bare.channel, "live", capacity=1)
    (grant,) = await live.wait_grants(1, timeout=5)
    assert grant.notify.id == created.id and grant.attempt == 2
    live.report(grant)
    done = await bare.wait_state(created.id, pb.STATE_SUCCEEDED)
    assert "lease expired" in done.attempts[0].error and done.attempts[1].success
    await live.close()


async def test_result_for_an_expired_lease_is_refused_and_changes_nothing(bare):
    n = pb.Notify(request=pb.HttpRequest(url="http://127.0.0.1:9/x"), retry=pb.RetryPolicy(max_attempts=1))
    n.timeout.FromMilliseconds(100)
    created = (await bare.api.CreateNotify(api.CreateNotifyRequest(notify=n))).notify
    d = RawDispatcher(bare.channel, "late", capacity=1)
    (grant,) = await d.wait_grants(1)
    failed = await bare.wait_state(created.id, pb.STATE_FAILED, timeout=5)  # expired: 1 attempt allowed
    d.report(grant, status=200)
    await d.wait_acked(grant.lease_id)
    assert grant.lease_id in d.acked, "refused results are acked so the dispatcher forgets them"
    after = await bare.get(created.id)
    assert after.state == pb.STATE_FAILED and len(after.attempts) == len(failed.attempts) == 1
    await d.close()


async def test_result_for_an_unknown_lease_is_refused(bare):
    d = RawDispatcher(bare.channel, "d", capacity=1)
    fake = dpb.LeaseGrant(lease_id="no-such-lease", attempt=1, notify=pb.Notify(id="nope"))
    d.report(fake)
    await d.wait_acked("no-such-lease")
    assert "no-such-lease" in d.acked
    await d.close()


async def test_a_lease_is_never_granted_to_two_dispatchers_at_once(bare):
    a = RawDispatcher(bare.channel, "a", capacity=50)
    b = RawDispatcher(bare.channel, "b", capacity=50)
    await a.sync(); await b.sync()  # both connected
    await create_many(bare, 60)
    await a.sync(); await b.sync()
    ids_a = {g.notify.id for g in a.grants}
    ids_b = {g.notify.id for g in b.grants}
    assert len(ids_a) + len(ids_b) == 60 and not ids_a & ids_b
    await a.close()
    await b.close()


async def test_reconnected_dispatcher_can_still_report_a_live_lease(bare):
    n = pb.Notify(request=pb.HttpRequest(url="http://127.0.0.1:9/x"))
    n.timeout.FromSeconds(10)
    created = (await bare.api.CreateNotify(api.CreateNotifyRequest(notify=n))).notify
    first = RawDispatcher(bare.channel, "same-id", capacity=1)
    (grant,) = await first.wait_grants(1)
    await first.close()  # the stream breaks; the dispatcher lives on
    await asyncio.sleep(0.2)
    second = RawDispatcher(bare.channel, "same-id", capacity=1, credit=0)
    second.report(grant, credit=0)
    done = await bare.wait_state(created.id, pb.STATE_SUCCEEDED)
    assert len(done.attempts) == 1, "no needless duplicate"
    await second.close()


async def test_unsent_grants_of_a_replaced_stream_go_back_to_the_queue(bare):
    await create_many(bare, 3)
    d = RawDispatcher(bare.channel, "x", capacity=3)
    await d.wait_grants(3)
    await d.close()
    other = RawDispatcher(bare.channel, "y", capacity=3)
    await other.sync()
    assert other.grants == [], "sent grants stay leased to x until their deadlines"
    await other.close()


async def test_cancel_while_leased_sends_a_revoke(bare):
    (created,) = await create_many(bare, 1)
    d = RawDispatcher(bare.channel, "d", capacity=1)
    (grant,) = await d.wait_grants(1)
    await bare.api.CancelNotify(api.CancelNotifyRequest(id=created.id))
    await d.sync()
    assert d.revoked == [grant.lease_id]
    d.report(grant)
    await d.wait_acked(grant.lease_id)
    assert (await bare.get(created.id)).state == pb.STATE_CANCELLED
    await d.close()


async def test_a_deferred_call_is_rescheduled_without_counting_an_attempt(bare):
    n = pb.Notify(request=pb.HttpRequest(url="http://127.0.0.1:9/x"), retry=pb.RetryPolicy(max_attempts=1))
    created = (await bare.api.CreateNotify(api.CreateNotifyRequest(notify=n))).notify
    d = RawDispatcher(bare.channel, "d", capacity=1)
    (grant,) = await d.wait_grants(1)
    result = dpb.LeaseResult(lease_id=grant.lease_id, notify_id=created.id, deferred=True,
                             attempt=pb.Attempt(number=1, error="not sent: 127.0.0.1:9 is backing off"))
    result.retry_after.FromMilliseconds(300)
    d.send(results=[result], credit=1)
    await d.wait_acked(grant.lease_id)  # acked once committed
    waiting = await bare.get(created.id)
    assert waiting.state == pb.STATE_RETRY_WAIT and waiting.attempt_count == 0 and list(waiting.attempts) == []
    (_, again) = await d.wait_grants(2, timeout=3)
    assert again.attempt == 1, "the one allowed attempt is still there"
    d.report(again)
    await bare.wait_state(created.id, pb.STATE_SUCCEEDED)
    await d.close()


async def test_real_client_reconnects_after_a_broken_stream_and_reports_the_live_lease(system, target):
    target.respond("/slow", (200, 0.5))
    n = await system.create(target.url("/slow"))
    await target.wait_for(1)
    client = system.dispatchers[0].client
    assert system.scheduler.engine.end_session(client.dispatcher_id)  # the stream ends; both sides live on
    done = await system.wait_state(n.id, pb.STATE_SUCCEEDED, timeout=10)
    assert len(done.attempts) == 1 and done.attempts[0].dispatcher_id == client.dispatcher_id
    await asyncio.sleep(0.3)
    assert len(target.received) == 1, "no needless duplicate"


async def test_real_client_reopens_a_stream_whose_call_was_cancelled(system, target):
    target.respond("/slow", (200, 0.5))
    n = await system.create(target.url("/slow"))
    await target.wait_for(1)
    (client,) = system.dispatchers[0].client.streams
    client._call.cancel()  # the call object is cancelled under the client
    done = await system.wait_state(n.id, pb.STATE_SUCCEEDED, timeout=10)
    assert len(done.attempts) == 1
    later = await system.create(target.url("/after"))
    await system.wait_state(later.id, pb.STATE_SUCCEEDED, timeout=10)


def test_a_result_is_cut_to_the_stored_bounds_and_one_within_them_is_kept_as_it_is():
    from notifyagent.scheduler.engine.results import ResultIn
    from notifyagent.scheduler.engine.retry import Outcome
    from notifyagent.scheduler.engine.limits import bound_result

    big = ResultIn("l", Outcome(500, False, "e" * 2000 + "\x00", retry_after_s=1e9), 0, 0, b"x" * 5000,
                   {"k" * 300: "v" * 300, **{f"h{i}": "v" for i in range(40)}})  # fmt: skip
    cut = bound_result(big)
    assert (len(cut.outcome.error), cut.outcome.retry_after_s, len(cut.snippet)) == (1024, 7 * 86400.0, 4096)
    assert "\x00" not in cut.outcome.error and len(cut.headers) == 32 and max(map(len, [*cut.headers, *cut.headers.values()])) == 256
    assert bound_result(ResultIn("l", Outcome(503, False, "", retry_after_s=-3.0), 0, 0)).outcome.retry_after_s == 0.0
    assert len(bound_result(ResultIn("l", Outcome(200, True, ""), 0, 0, b"", {"a": "b" * 300})).headers["a"]) == 256
    fine = ResultIn("l", Outcome(200, True, "", retry_after_s=3.0), 0, 0, b"ok", {"server": "nginx"})
    assert bound_result(fine) == fine
