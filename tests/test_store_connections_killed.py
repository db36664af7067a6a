"""PostgreSQL restarting under load, as the scheduler sees it: every connection it holds is
killed (pg_terminate_backend from another connection), once while new ones can be opened
at once and once with the database refusing connections for a while (as a restart does).
The shared server cannot be restarted, so the test gets its own database. Notifies are
created all along (retried with their request_id until acknowledged): none acknowledged
is lost, health turns NOT_SERVING while nothing can commit and SERVING again after, and
delivery resumes."""

from __future__ import annotations

import asyncio
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api, notify_service_pb2_grpc
from support import Proc, free_port, open_channel, wait_serving
from test_store_contract import PG_DSN, postgres_admin

pytestmark = pytest.mark.postgres
SERVING = health_pb2.HealthCheckResponse.SERVING


def dsn_for(database: str) -> str:
    parts = urlsplit(PG_DSN)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def kill_connections(admin, database: str) -> int:
    return await admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        database,
    )


@pytest.mark.timeout(180)
async def test_killed_connections_lose_nothing_health_follows_and_delivery_resumes(tmp_path, target):
    database = f"na_kill_{uuid.uuid4().hex[:12]}"
    admin = await postgres_admin()
    await admin.execute(f'CREATE DATABASE "{database}"')
    addr = f"127.0.0.1:{free_port()}"
    common = ["--http-addr", "", "--grace", "1"]
    scheduler = Proc(["scheduler", "--grpc-addr", addr, "--store", dsn_for(database), "--ownership-ttl", "2", *common],
                     log_path=tmp_path / "scheduler.log")  # fmt: skip
    dispatcher = Proc(["dispatcher", "--registry", f"static:{addr}", "--allow-networks", "127.0.0.0/8", *common],
                      log_path=tmp_path / "dispatcher.log")  # fmt: skip
    channel = None
    try:
        scheduler.start()
        await wait_serving(addr, timeout=30, proc=scheduler)
        dispatcher.start()
        channel = open_channel(addr)
        stub = notify_service_pb2_grpc.NotifyServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        acknowledged: dict[str, str] = {}  # request_id -> notify id
        refused = 0
        producing = True

        async def create(i: int) -> None:
            nonlocal refused
            req = api.CreateNotifyRequest(request_id=f"r{i}", notify=pb.Notify(
                request=pb.HttpRequest(method=pb.HTTP_METHOD_POST, url=target.url(f"/n{i}"))))  # fmt: skip
            req.notify.retry.min_backoff.FromMilliseconds(100)
            req.notify.retry.max_backoff.FromMilliseconds(500)
            while True:
                try:
                    acknowledged[req.request_id] = (await stub.CreateNotify(req, timeout=5)).notify.id
                    return
                except grpc.RpcError as e:
                    assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), e
                    refused += 1
                    await asyncio.sleep(0.1)

        async def produce() -> None:
            i = 0
            while producing:
                await asyncio.gather(*(create(i + k) for k in range(5)))
                i += 5
                await asyncio.sleep(0.05)

        statuses: list[int] = []

        async def sample_health() -> None:
            while producing:
                try:
                    statuses.append((await health.Check(health_pb2.HealthCheckRequest(), timeout=1)).status)
                except grpc.RpcError:
                    statuses.append(-1)
                await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(produce()), asyncio.create_task(sample_health())]
        await asyncio.sleep(1.5)
        assert await kill_connections(admin, database) >= 2, "the scheduler's pool, writer and ownership connections"
        await asyncio.sleep(1.5)
        before_outage = len(acknowledged)
        assert before_outage > 0
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')  # as a restart: down for a while
        await kill_connections(admin, database)
        outage_end = time.monotonic() + 3
        while time.monotonic() < outage_end:
            await kill_connections(admin, database)
            await asyncio.sleep(0.2)
        assert SERVING != statuses[-1], "health is NOT_SERVING while the store cannot commit"
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await asyncio.sleep(4)  # the scheduler reconnects, takes its partitions again; creates go on
        producing = False
        await asyncio.gather(*tasks)
        assert statuses[-1] == SERVING, "SERVING again once the store commits"
        assert refused > 0, "creates were refused (UNAVAILABLE) while the store was down"
        assert len(acknowledged) > before_outage, "creates are acknowledged again after the outage"

        ids = set(acknowledged.values())
        assert len(ids) == len(acknowledged), "one notify per request_id, retried or not"
        deadline = time.monotonic() + 60
        while not ids <= {r.headers.get("Notify-Id") for r in target.received}:
            assert time.monotonic() < deadline, f"{len(ids - {r.headers.get('Notify-Id') for r in target.received})} never delivered"
            await asyncio.sleep(0.2)
        for notify_id in ids:  # and recorded as delivered: nothing acknowledged is lost
            got = (await stub.GetNotify(api.GetNotifyRequest(id=notify_id), timeout=5)).notify
            deadline = time.monotonic() + 20
            while got.state != pb.STATE_SUCCEEDED:
                assert time.monotonic() < deadline, f"{notify_id} is {pb.State.Name(got.state)}"
                await asyncio.sleep(0.2)
                got = (await stub.GetNotify(api.GetNotifyRequest(id=notify_id), timeout=5)).notify
        print(f"PGKILL acknowledged={len(ids)} refused_attempts={refused} health_samples={len(statuses)} "
              f"not_serving_samples={sum(s != SERVING for s in statuses)}")
    finally:
        if channel is not None:
            await channel.close()
        dispatcher.kill()
        scheduler.kill()
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
