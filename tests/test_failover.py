"""Several schedulers on the real PostgreSQL, as real processes: failover and zombies.

- Failover: three schedulers and two dispatchers; notifies created through every
  scheduler (immediate, delayed, trigger-keyed, ordering-keyed) while the one
  owning most partitions is SIGKILLed under load. Every acknowledged notify is
  delivered, a notify it owned is delivered by another within 10 s, duplicates
  stay within the calls in flight, and each ordering key's notifies arrive in order.
- Zombie: a scheduler SIGSTOPped past its ownership TTL comes back to find its
  partitions taken; it commits nothing and delivers nothing it held, then
  rejoins and takes a share again.

The CI versions are bounded (about a minute each); NOTIFY_SOAK=full runs longer loads.
With tokens on (the default for process tests), every forward and fan-out carries the
caller's token to the owner.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from collections import Counter

import asyncpg
import grpc
import pytest
from notifyagent.common.ids import partition_of
from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api, notify_service_pb2_grpc
from support import Proc, Target, free_port, open_channel, wait_serving
from test_store_contract import PG_DSN, postgres_admin

pytestmark = pytest.mark.postgres
FULL = os.environ.get("NOTIFY_SOAK") == "full"
P = 16
CAPACITY = 32  # per dispatcher


class Cluster:
    """Schedulers and dispatchers as processes on one fresh PostgreSQL schema."""

    def __init__(self, tmp_path, *, schedulers: int, dispatchers: int, ttl: float) -> None:
        self.tmp_path = tmp_path
        self.schema = f"t_{uuid.uuid4().hex[:16]}"
        self.dsn = f"{PG_DSN}{'&' if '?' in PG_DSN else '?'}search_path={self.schema}"
        self.addrs = [f"127.0.0.1:{free_port()}" for _ in range(schedulers)]
        self.ttl = ttl
        self.n_dispatchers = dispatchers
        self.procs: dict[str, Proc] = {}
        self.channels: dict[str, grpc.aio.Channel] = {}
        self.admin: asyncpg.Connection | None = None

    async def start(self) -> None:
        self.admin = await postgres_admin()
        await self.admin.execute(f'CREATE SCHEMA "{self.schema}"')
        common = ["--http-addr", "", "--log-level", "INFO", "--grace", "1"]
        for i, addr in enumerate(self.addrs):
            args = ["scheduler", "--grpc-addr", addr, "--store", self.dsn, "--partitions", str(P),
                    "--ownership-ttl", str(self.ttl), "--lease-margin", "1", *common]  # fmt: skip
            self.procs[f"s{i}"] = Proc(args, log_path=self.tmp_path / f"s{i}.log").start()
            await wait_serving(addr, timeout=30, proc=self.procs[f"s{i}"])
        for i in range(self.n_dispatchers):
            args = ["dispatcher", "--registry", "static:" + ",".join(self.addrs), "--allow-networks", "127.0.0.0/8",
                    "--capacity", str(CAPACITY), *common]  # fmt: skip
            self.procs[f"d{i}"] = Proc(args, log_path=self.tmp_path / f"d{i}.log").start()
        for addr in self.addrs:
            self.channels[addr] = open_channel(addr)  # the test token when tokens are on: forwards carry it

    async def stop(self) -> None:
        for ch in self.channels.values():
            await ch.close()
        for proc in self.procs.values():
            if proc.popen and proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGCONT)
                proc.kill()
        if self.admin is not None:
            await self.admin.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            await self.admin.close()

    def stub(self, addr: str) -> notify_service_pb2_grpc.NotifyServiceStub:
        return notify_service_pb2_grpc.NotifyServiceStub(self.channels[addr])

    async def owners(self) -> dict[str, set[int]]:
        """Scheduler address -> the partitions it owns now (per the table)."""
        rows = await self.admin.fetch(
            f'SELECT o.partition, m.address FROM "{self.schema}".partition_owners o'
            f' JOIN "{self.schema}".scheduler_members m ON m.owner = o.owner WHERE o.expires_at > now()'
        )
        out: dict[str, set[int]] = {a: set() for a in self.addrs}
        for p, addr in rows:
            out.setdefault(addr, set()).add(p)
        return out

    async def wait_balanced(self, live: list[str], timeout: float = 30) -> dict[str, set[int]]:
        deadline = time.monotonic() + timeout
        while True:
            owners = await self.owners()
            sizes = [len(owners.get(a, ())) for a in live]
            if sum(sizes) == P and min(sizes) >= P // len(live) and max(sizes) - min(sizes) <= 1:
                return owners  # every live one holds its even share
            if time.monotonic() > deadline:
                raise AssertionError(f"partitions not shared among {live}: {owners}")
            await asyncio.sleep(0.2)

    async def create(self, addr_choices: list[str], req: api.CreateNotifyRequest, timeout: float = 30) -> pb.Notify:
        """CreateNotify through a random live scheduler, retried (same request_id) until acknowledged."""
        deadline = time.monotonic() + timeout
        while True:
            addr = random.choice(addr_choices)
            try:
                return (await self.stub(addr).CreateNotify(req, timeout=5)).notify
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


def notify(url: str, **fields) -> pb.Notify:
    n = pb.Notify(request=pb.HttpRequest(method=pb.HTTP_METHOD_POST, url=url), **fields)
    n.retry.max_attempts = 20
    n.retry.min_backoff.FromMilliseconds(100)
    n.retry.max_backoff.FromMilliseconds(500)
    n.retry.multiplier = 2
    n.timeout.FromSeconds(5)
    return n


def first_times(target: Target) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in target.received:
        out.setdefault(r.headers.get("Notify-Id", ""), r.at)
    return out


async def wait_delivered(target: Target, ids: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ids <= set(first_times(target)):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)


@pytest.mark.timeout(300 if FULL else 150)
async def test_a_killed_schedulers_notifies_are_delivered_by_the_others_within_seconds(tmp_path):
    rng = random.Random(11)
    target = Target()
    target.script["/slow"] = [(200, 0.2)]
    await target.start()
    cluster = Cluster(tmp_path, schedulers=3, dispatchers=2, ttl=5.0)
    try:
        await cluster.start()
        owners = await cluster.wait_balanced(cluster.addrs)
        acked: dict[str, pb.Notify] = {}
        order: dict[str, list[str]] = {}  # ordering key -> ids in creation order

        async def ordered(key: str, count: int, live: list[str]) -> None:
            for _ in range(count):
                seq = len(order.get(key, []))
                req = api.CreateNotifyRequest(notify=notify(target.url(f"/o/{key}/{seq}"), ordering_key=key),
                                              request_id=f"{key}-{seq}")  # fmt: skip
                n = await cluster.create(live, req)
                acked[n.id] = n
                order.setdefault(key, []).append(n.id)

        async def load(prefix: str, count: int, live: list[str], pause: float) -> None:
            for i in range(count):
                kind = i % 3
                if kind == 0:
                    n = notify(target.url("/slow"))
                elif kind == 1:
                    n = notify(target.url("/now"))
                else:
                    n = notify(target.url("/later"))
                    n.delay.FromMilliseconds(rng.randrange(500, 6000))
                got = await cluster.create(live, api.CreateNotifyRequest(notify=n, request_id=f"{prefix}-{i}"))
                acked[got.id] = got
                if pause:
                    await asyncio.sleep(pause)

        keys = [f"key{i}" for i in range(6)]
        triggered = []
        for i in range(12):  # waiting on a trigger fired after the kill
            n = notify(target.url("/trig"), trigger_key="after-kill")
            got = await cluster.create(cluster.addrs, api.CreateNotifyRequest(notify=n, request_id=f"trig-{i}"))
            triggered.append(got.id)
            acked[got.id] = got
        await asyncio.gather(load("warm", 150, cluster.addrs, 0), *(ordered(k, 5, cluster.addrs) for k in keys))

        under_load = asyncio.gather(load("during", 300 if FULL else 120, cluster.addrs, 0.005),
                                    *(ordered(k, 5, cluster.addrs) for k in keys))  # fmt: skip
        await asyncio.sleep(1.0)
        owners = await cluster.owners()  # as they are at the kill
        victim = max(owners, key=lambda a: len(owners[a]))
        name = f"s{cluster.addrs.index(victim)}"
        victim_parts = owners[victim]
        live = [a for a in cluster.addrs if a != victim]
        in_flight_at_kill = target.in_flight
        cluster.procs[name].kill()
        killed_at = time.time()
        # creates keep going: those sent to the dead one are retried on the others
        cluster_live = live

        async def after_kill():
            for i in range(60):
                n = notify(target.url("/now"))
                got = await cluster.create(cluster_live, api.CreateNotifyRequest(notify=n, request_id=f"after-{i}"))
                acked[got.id] = got

        await asyncio.gather(after_kill(), _retry_dead(under_load, cluster, victim, live))
        fired = 0
        deadline = time.monotonic() + 30
        while fired < len(triggered) and time.monotonic() < deadline:  # through a survivor; fan out to every owner
            fired += (await cluster.stub(live[0]).Trigger(api.TriggerRequest(trigger_key="after-kill"), timeout=10)).triggered
            if fired < len(triggered):
                await asyncio.sleep(0.5)
        await wait_delivered(target, set(acked), timeout=60)

        firsts = first_times(target)
        lost = set(acked) - set(firsts)
        counts = Counter(r.headers.get("Notify-Id", "") for r in target.received)
        duplicates = sum(c - 1 for i, c in counts.items() if i in acked and c > 1)
        owned = [i for i in acked if partition_of(i, P) in victim_parts]
        # failover: the first delivery, after the kill, of a notify of the victim's partitions
        # that was due after the kill (nobody could have granted it but a new owner)
        after = [firsts[i] - killed_at for i in owned if i in firsts and firsts[i] > killed_at + 0.3]
        failover = min(after) if after else float("nan")
        last_owned = max((firsts[i] - killed_at for i in owned if i in firsts), default=float("nan"))
        out_of_order = [k for k, ids in order.items()
                        if sorted(ids, key=lambda i: firsts.get(i, 1e18)) != ids]  # fmt: skip
        print(f"\nFAILOVER schedulers=3 dispatchers=2 victim={victim} partitions={len(victim_parts)}/{P} "
              f"acknowledged={len(acked)} lost={len(lost)} duplicates={duplicates} "
              f"in_flight_at_kill={in_flight_at_kill} failover_s={failover:.2f} "
              f"victims_last_delivery_s={last_owned:.2f} triggered={fired} keys_out_of_order={len(out_of_order)}")
        assert not lost, f"{len(lost)} acknowledged notifies never delivered"
        assert fired == len(triggered)
        assert failover < 10, f"failover took {failover:.1f} s"
        assert duplicates <= 2 * CAPACITY, "duplicates beyond the calls that could be in flight"
        assert not out_of_order, f"ordering broken for {out_of_order}"
    finally:
        await cluster.stop()
        await target.stop()


async def _retry_dead(task, cluster, victim, live):
    """The load's creates already retry on UNAVAILABLE; this waits for it to finish."""
    await task


@pytest.mark.timeout(150)
async def test_a_paused_scheduler_commits_and_delivers_nothing_it_held_then_rejoins(tmp_path):
    target = Target()
    await target.start()
    ttl = 2.0
    cluster = Cluster(tmp_path, schedulers=2, dispatchers=1, ttl=ttl)
    try:
        await cluster.start()
        owners = await cluster.wait_balanced(cluster.addrs)
        zombie, other = cluster.addrs
        name = "s0"
        held_parts = owners[zombie]
        # notifies in the zombie's partitions, due while it is stopped: nothing is in flight at SIGSTOP
        held: list[str] = []
        i = 0
        while len(held) < 30:
            n = notify(target.url("/held"))
            n.delay.FromMilliseconds(1500)
            got = (await cluster.stub(zombie).CreateNotify(api.CreateNotifyRequest(notify=n), timeout=5)).notify
            i += 1
            if partition_of(got.id, P) in held_parts:
                held.append(got.id)
        os.kill(cluster.procs[name].popen.pid, signal.SIGSTOP)
        stopped_at = time.time()
        deadline = time.monotonic() + 30
        while (await cluster.owners()).get(other, set()) != set(range(P)):
            assert time.monotonic() < deadline, "the other scheduler did not take every partition over"
            await asyncio.sleep(0.2)
        await wait_delivered(target, set(held), timeout=20)
        assert set(held) <= set(first_times(target)), "the new owner delivers what the zombie held"
        await asyncio.sleep(max(0.0, stopped_at + 3 * ttl - time.time()))
        before = len(target.received)
        os.kill(cluster.procs[name].popen.pid, signal.SIGCONT)
        await asyncio.sleep(3 * ttl)  # the zombie's timers fire, its renewal fails, it rejoins
        late = [r for r in target.received[before:] if r.headers.get("Notify-Id") in set(held)]
        assert not late, f"the zombie delivered {len(late)} notifies it held after it woke up"
        conn = cluster.admin
        rows = await conn.fetch(f'SELECT notify_id, COUNT(*) FROM "{cluster.schema}".attempts'
                                " WHERE notify_id = ANY($1::text[]) GROUP BY notify_id", held)  # fmt: skip
        assert {r[0]: r[1] for r in rows} == {i: 1 for i in held}, "one attempt each: the zombie committed nothing"
        states = await conn.fetch(f'SELECT state FROM "{cluster.schema}".notifies WHERE id = ANY($1::text[])', held)
        assert {r[0] for r in states} == {int(pb.STATE_SUCCEEDED)}
        log = cluster.procs[name].log()
        assert "gave up partitions" in log
        owners = await cluster.wait_balanced(cluster.addrs, timeout=30)  # it rejoins and takes a share
        mine = []
        while len(mine) < 3:
            got = (await cluster.stub(zombie).CreateNotify(api.CreateNotifyRequest(notify=notify(target.url("/back"))), timeout=5)).notify
            if partition_of(got.id, P) in owners[zombie]:
                mine.append(got.id)
        await wait_delivered(target, set(mine), timeout=20)
        assert set(mine) <= set(first_times(target))
        print(f"\nZOMBIE held={len(held)} partitions={len(held_parts)}/{P} late_deliveries=0 rejoined_with={len(owners[zombie])}")
    finally:
        await cluster.stop()
        await target.stop()
