"""Per-target protection: the AIMD limiter alone, then a dispatcher between a sick and a healthy real target."""

import asyncio
import time

import aiohttp
from aiohttp import web

from notifyagent.dispatcher.call import CallOutcome, ErrorKind
from notifyagent.dispatcher.hosts import HostBusy, HostLimiter, host_key
from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api
from support import Received, System, Target, fast_retry, settings_for


def answer(status: int, retry_after: float | None = None) -> CallOutcome:
    return CallOutcome(status, status < 300, "", ErrorKind.NONE, 0.0, 0.0, b"", retry_after)


def test_targets_are_told_apart_by_host_and_port():
    assert host_key("http://127.0.0.1:8001/a?b") == "127.0.0.1:8001"
    assert host_key("https://Example.COM/x") == "example.com:443"
    assert host_key("http://127.0.0.1:8001/") != host_key("http://127.0.0.1:8002/")
    assert host_key("not a url") == ""


async def test_a_429_halves_the_limit_once_per_round_and_good_answers_restore_it():
    hosts = HostLimiter(ceiling=8)
    slots = [await hosts.acquire("a:1", 0) for _ in range(8)]
    for slot in slots:  # eight answers of the same round: one cut, not eight
        hosts.release(slot, answer(429, retry_after=0))
    assert hosts.limit("a:1") == 4
    slot = await hosts.acquire("a:1", 0)
    hosts.release(slot, answer(503, retry_after=0))  # a call of the new round cuts again
    assert hosts.limit("a:1") == 2
    for expected in range(3, 9):
        hosts.release(await hosts.acquire("a:1", 0), answer(200))
        assert hosts.limit("a:1") == expected
    assert hosts.snapshot() == [], "a recovered, idle target is forgotten"


async def test_calls_wait_out_a_retry_after_while_other_targets_go_at_once():
    hosts = HostLimiter(ceiling=4)
    hosts.release(await hosts.acquire("sick:1", 0), answer(429, retry_after=0.3))
    started = time.monotonic()
    other = await hosts.acquire("well:1", 1.0)
    assert time.monotonic() - started < 0.05, "another target is not held up"
    await hosts.acquire("sick:1", 1.0)
    assert 0.28 <= time.monotonic() - started < 0.6, "the sick target's call waited for its Retry-After"
    hosts.release(other, answer(200))


async def test_a_call_whose_wait_would_outlast_its_lease_is_deferred_with_the_backoff_left():
    hosts = HostLimiter(ceiling=4)
    hosts.release(await hosts.acquire("sick:1", 0), answer(429, retry_after=30))
    started = time.monotonic()
    try:
        await hosts.acquire("sick:1", max_wait=2.0)
        raise AssertionError("expected HostBusy")
    except HostBusy as busy:
        assert 29 < busy.retry_after <= 30
    assert time.monotonic() - started < 0.05, "it did not wait at all"


async def test_a_target_never_holds_more_than_twice_its_limit_of_slots():
    hosts = HostLimiter(ceiling=8)
    first = [await hosts.acquire("t:1", 0) for _ in range(8)]
    for slot in first:
        hosts.release(slot, answer(503, retry_after=0))
    hosts.release(await hosts.acquire("t:1", 0), answer(503, retry_after=0))
    assert hosts.limit("t:1") == 2
    running = [await hosts.acquire("t:1", 0) for _ in range(2)]
    waiters = [asyncio.create_task(hosts.acquire("t:1", 5.0)) for _ in range(2)]
    await asyncio.sleep(0.01)
    try:
        await hosts.acquire("t:1", 5.0)
        raise AssertionError("a fifth call should be deferred")
    except HostBusy as busy:
        assert "limit of 2" in str(busy) and busy.retry_after >= 1.0
    (state,) = hosts.snapshot()
    assert (state.running, state.waiting) == (2, 2)
    hosts.release(running[0], answer(200))  # the limit grows to 3: both waiters get a place
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert hosts.snapshot()[0].running == 3


async def test_waiters_beyond_a_newly_cut_limit_are_deferred_at_once():
    hosts = HostLimiter(ceiling=4)
    running = [await hosts.acquire("t:1", 0) for _ in range(4)]
    waiters = [asyncio.create_task(hosts.acquire("t:1", 5.0)) for _ in range(4)]
    await asyncio.sleep(0.01)
    hosts.release(running[0], answer(429, retry_after=2))  # limit 4 -> 2: two of the four waiters must go
    await asyncio.sleep(0.01)
    deferred = [w for w in waiters if w.done() and isinstance(w.exception(), HostBusy)]
    assert len(deferred) == 2 and all(w.exception().retry_after > 1.9 for w in deferred)
    assert hosts.snapshot()[0].waiting == 2
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


class SickTarget(Target):
    """Answers 429 with Retry-After while `sick`, 200 once healed; records concurrency per answer."""

    sick: bool = True
    retry_after: str = "1"
    delay: float = 0.2

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(Received(time.time(), request.method, request.path, dict(request.query), dict(request.headers), b""))
        self._arrived.set()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        if self.sick:
            return web.Response(status=429, headers={"Retry-After": self.retry_after}, text="slow down")
        return web.Response(status=200, text="ok")


async def test_a_sick_target_gets_fewer_calls_and_a_healthy_one_is_not_delayed(tmp_path):
    sick, healthy = SickTarget(), Target()
    await sick.start()
    await healthy.start()
    healthy.respond("/ok", (200, 0.05))
    system = System(settings_for(tmp_path, capacity=8, lease_margin=5.0, http_addr="127.0.0.1:0"))
    await system.start()
    dispatcher = system.dispatchers[0]
    key = f"127.0.0.1:{sick.port}"
    try:
        sick_ids = [(await system.create(sick.url("/s"), retry=fast_retry(max_attempts=100))).id for _ in range(12)]
        deadline = time.monotonic() + 8
        while dispatcher.hosts.limit(key) > 2:
            assert time.monotonic() < deadline, f"sick limit stayed at {dispatcher.hosts.limit(key)}"
            await asyncio.sleep(0.05)

        # The sick target is limited now: the healthy one gets the rest of the dispatcher at once.
        sick.max_in_flight = 0
        created = time.time()
        batch = [api.CreateNotifyRequest(notify=pb.Notify(request=pb.HttpRequest(url=healthy.url("/ok")))) for _ in range(30)]
        healthy_ids = {n.id for n in (await system.api.BatchCreateNotify(api.BatchCreateNotifyRequest(requests=batch))).notifies}
        got = await healthy.wait_for(30, timeout=5)
        assert {r.headers["Notify-Id"] for r in got} == healthy_ids
        assert max(r.at for r in got) - created < 1.0, "30 calls of 50 ms, in parallel on the slots the sick target left"
        assert healthy.max_in_flight >= 4, "the sick target holds at most twice its limit of the 8 slots"
        assert sick.max_in_flight <= 2, "the sick target's concurrency dropped to its limit"
        attempts = sum([len((await system.get(i)).attempts) for i in sick_ids])
        assert len(sick.received) == attempts, "calls held back are not attempts: only calls made are recorded"

        await asyncio.sleep(0.2)  # the healthy target's last calls finish
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{dispatcher._ops.port}/metrics") as resp:
                metrics = await resp.text()
        assert f'notifyagent_target_limit{{target="{key}"}}' in metrics
        limiter_series = [line for line in metrics.splitlines() if line.startswith(
            ("notifyagent_target_limit", "notifyagent_target_in_flight", "notifyagent_target_waiting", "notifyagent_target_backoff"))]
        assert not [line for line in limiter_series if f'target="127.0.0.1:{healthy.port}"' in line], \
            "a healthy idle target is not tracked by the limiter (its attempts are counted)"

        sick.sick = False  # heals: the limit grows back by one per good answer
        for i in sick_ids:
            await system.wait_state(i, pb.STATE_SUCCEEDED, timeout=15)
        assert dispatcher.hosts.limit(key) == 8, "the limit is back at the dispatcher's capacity"
        assert len(set(sick.ids())) == 12
    finally:
        await system.stop()
        await sick.stop()
        await healthy.stop()
