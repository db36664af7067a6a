"""notifyagent.client: sync and asyncio against a real scheduler; retries only on UNAVAILABLE,
creates only with a request_id; the token travels as `authorization: Bearer`."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from notifyagent.client import ATTEMPTS, AsyncClient, Client, Connection, notify, violations
from notifyagent.v1 import notify_pb2 as api_pb, notify_service_pb2_grpc as api_grpc


async def test_async_client_creates_reads_triggers_and_reports_violations(system, target):
    async with AsyncClient(system.scheduler.address) as c:
        made = await c.create(notify(target.url("/a"), json='{"x": 1}'), request_id="a-1")
        again = await c.create(notify(target.url("/other")), request_id="a-1")
        assert again.id == made.id
        await target.wait_for(1)
        assert target.received[0].body == b'{"x": 1}'
        waiting = await c.create(notify(target.url("/t"), method="get", trigger_key="go"))
        listed = await c.list(state="WAITING_TRIGGER")
        assert [n.id for n in listed.notifies] == [waiting.id]
        assert await c.trigger("go") == 1
        await target.wait_for(2)
        later = await c.create(notify(target.url("/later"), delay=3600))
        updated = await c.update(_with_id(later.id, labels={"k": "v"}), ["labels"])
        assert dict(updated.labels) == {"k": "v"}
        assert (await c.cancel(later.id)).state == (await c.get(later.id)).state == api_pb.STATE_CANCELLED
        assert (await c.retry(later.id)).id == later.id
        assert (await c.status()).pid > 0
        members = [await c.create(notify(target.url("/g"), delay=3600, group_key="fan")) for _ in range(2)]
        assert (await c.get_group("fan")).total == 2
        assert [n.id for n in (await c.list(group_key="fan")).notifies] == [m.id for m in members]
        assert (await c.cancel_group("fan")).cancelled == 2
        with pytest.raises(grpc.RpcError) as e:
            await c.create(notify("ftp://x"))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in violations(e.value)] == ["notify.request.url"]


def _with_id(notify_id: str, **fields):
    n = notify("http://127.0.0.1/unused")
    n.id = notify_id
    for k, v in fields.items():
        getattr(n, k).update(v)
    return n


async def test_sync_client_does_the_same(system, target):
    def work():
        with Client(system.scheduler.address) as c:
            made = c.create(notify(target.url("/s"), form={"a": "b"}), request_id="s-1")
            batch = c.batch_create([(notify(target.url("/b1")), "b-1"), (notify(target.url("/b2")), "b-2")])
            return made, batch, c.get(made.id), c.status()

    made, batch, got, status = await asyncio.to_thread(work)
    assert got.id == made.id and len(batch) == 2 and len(status.dispatchers) == 1
    await target.wait_for(3)


class _Unavailable(api_grpc.NotifyServiceServicer):
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    async def _no(self, name, context):
        self.calls.append((name, dict(context.invocation_metadata())))
        await context.abort(grpc.StatusCode.UNAVAILABLE, "draining")

    async def CreateNotify(self, request, context):
        await self._no("create", context)

    async def GetNotify(self, request, context):
        await self._no("get", context)

    async def Trigger(self, request, context):
        await self._no("trigger", context)

    async def CancelNotify(self, request, context):
        self.calls.append(("cancel", {}))
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such notify")


@pytest.fixture
async def unavailable():
    servicer = _Unavailable()
    server = grpc.aio.server()
    api_grpc.add_NotifyServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    servicer.address = f"127.0.0.1:{port}"
    yield servicer
    await server.stop(None)


async def test_retries_only_on_unavailable_and_creates_only_with_a_request_id(unavailable):
    async with AsyncClient(unavailable.address, token="s3cret") as c:
        for call in (c.create(notify("http://x/")), c.create(notify("http://x/"), request_id="r"), c.get("id"),
                     c.trigger("k"), c.cancel("id")):  # fmt: skip
            with pytest.raises(grpc.RpcError):
                await call
    names = [name for name, _ in unavailable.calls]
    assert names == ["create"] + ["create"] * ATTEMPTS + ["get"] * ATTEMPTS + ["trigger"] + ["cancel"]
    assert unavailable.calls[0][1]["authorization"] == "Bearer s3cret"


def test_connection_reads_the_environment_and_arguments_win(tmp_path):
    env = {"NOTIFY_GRPC_ADDR": "10.0.0.1:1", "NOTIFY_TOKEN": "t", "NOTIFY_TLS_CA": str(tmp_path / "ca.pem")}
    c = Connection.from_env(env)
    assert (c.address, c.token, c.tls, c.metadata()) == ("10.0.0.1:1", "t", True, (("authorization", "Bearer t"),))
    assert Connection.from_env(env, address="127.0.0.1:2", token="").token == ""
    with pytest.raises(ValueError, match="NOTIFY_TLS_CA"):
        c.credentials()  # the file does not exist: one line naming the setting
    with pytest.raises(ValueError, match="NOTIFY_TLS_KEY"):
        Connection.from_env({}, tls_cert=str(tmp_path / "c.pem")).credentials()
