"""No message exceeds what its peer accepts: grants are split by size, both ends share
NOTIFY_MAX_MESSAGE_BYTES, and a notify that cannot fit one grant is refused at create time."""

import pytest

from notifyagent.scheduler.engine.core import Engine, EngineSettings
from notifyagent.scheduler.engine.errors import InvalidArgument
from notifyagent.scheduler.engine.model import Request, Spec
from notifyagent.scheduler.engine.operations import Operations
from notifyagent.scheduler.engine.validate import Limits
from notifyagent.scheduler.store.sqlite import SqliteStore
from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api
from notifyagent.dispatcher.app import DispatcherApp
from support import System, create, settings_for


async def test_twenty_notifies_with_1_mib_bodies_waiting_for_a_dispatcher_are_all_delivered_once(tmp_path, target):
    """Ten per batch (the documented body limit, 1,048,576 bytes, each); twenty are due when
    the dispatcher connects, so their grants (over 20 MB) must go out in several messages."""
    settings = settings_for(tmp_path, capacity=32)
    s = System(settings, dispatchers=0)
    await s.start()
    dispatcher = DispatcherApp(settings, registry=s.registry)
    try:
        body = b"b" * (1 << 20)
        ids = []
        for batch in range(2):
            reqs = [
                api.CreateNotifyRequest(notify=pb.Notify(request=pb.HttpRequest(
                    method=pb.HTTP_METHOD_POST, url=target.url(f"/big/{batch}/{i}"), body=body)))  # fmt: skip
                for i in range(10)
            ]
            resp = await s.api.BatchCreateNotify(api.BatchCreateNotifyRequest(requests=reqs))
            ids += [n.id for n in resp.notifies]
        await dispatcher.start()
        for notify_id in ids:
            done = await s.wait_state(notify_id, pb.STATE_SUCCEEDED, timeout=60)
            assert len(done.attempts) == 1, "no attempt lost to a reset stream"
        got = await target.wait_for(20)
        assert len(got) == 20 and len({r.path for r in got}) == 20
        assert all(len(r.body) == 1 << 20 for r in got)
    finally:
        await dispatcher.stop()
        await s.stop()


async def test_a_notify_that_cannot_fit_one_grant_is_refused_at_create_time(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    limits = Limits(max_body_bytes=1 << 20, max_message_bytes=512 << 10)
    e = Engine(store=store, settings=EngineSettings(load_interval_s=3600, limits=limits))
    await e.start()
    try:
        big = Spec(request=Request(method="POST", url="https://example.com/x", body=b"x" * (600 << 10)))
        with pytest.raises(InvalidArgument) as err:
            await create(Operations(e, store), [big])
        assert "notify.request" in dict(err.value.violations)
        assert await store.counts() == {}
    finally:
        await e.stop()
        await store.close()
