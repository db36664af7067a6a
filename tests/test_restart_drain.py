"""A scheduler's drain ends with its stream: dispatchers work again after a restart."""

import asyncio
import grpc
from notifyagent.registry import MemoryRegistry
from notifyagent.scheduler.app import SchedulerApp
from notifyagent.dispatcher.app import DispatcherApp
from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api, notify_service_pb2_grpc
from support import settings_for


async def test_dispatcher_takes_work_again_after_the_scheduler_restarts(tmp_path, target):
    settings = settings_for(tmp_path, grace=0.5)
    reg = MemoryRegistry()
    s1 = SchedulerApp(settings, registry=reg)
    await s1.start()
    d = DispatcherApp(settings, registry=reg)
    await d.start()
    await d.client.wait_connected(10)
    await s1.stop()                      # SIGTERM path: engine.drain sends Drain to the dispatcher
    s2 = SchedulerApp(settings, registry=reg)
    await s2.start()
    try:
        await d.client.wait_connected(10)
        async with grpc.aio.insecure_channel(s2.address) as ch:
            stub = notify_service_pb2_grpc.NotifyServiceStub(ch)
            await stub.CreateNotify(api.CreateNotifyRequest(notify=pb.Notify(request=pb.HttpRequest(method=pb.HTTP_METHOD_POST, url=target.url()))))
            await asyncio.sleep(0.3)
            print("dispatcher draining:", [c._draining for c in d.client.streams], "sessions credit:", {d.dispatcher_id: d.credit for d in s2.engine.snapshot().dispatchers})
            await target.wait_for(1, timeout=5)
    finally:
        await d.stop()
        await s2.stop()
        await reg.close()
