"""Queue pause and resume over the HTTP/JSON API (the console's Pause and Resume buttons)."""

from urllib.parse import quote

import aiohttp
import pytest

from notifyagent.v1 import admin_service_pb2 as admin_pb
from support import System, settings_for


@pytest.fixture
async def http_system(tmp_path):
    s = System(settings_for(tmp_path, http_addr="127.0.0.1:0"))
    await s.start()
    yield s
    await s.stop()


@pytest.mark.parametrize("name", ["mail", "team:a/b=c@d.e+f-g"])
async def test_queue_pause_and_resume_over_http(http_system, name):
    url = f"http://{http_system.scheduler.http_address}/v1/queues/{quote(name, safe='')}"
    async with aiohttp.ClientSession() as http:
        async with http.post(url + ":pause") as resp:
            assert resp.status == 200, await resp.text()
            queue = (await resp.json())["queue"]
            assert queue["name"] == name and queue["paused"] is True
        status = await http_system.admin.GetStatus(admin_pb.GetStatusRequest())
        assert [q.paused for q in status.queues if q.name == name] == [True]
        async with http.post(url + ":resume") as resp:
            assert resp.status == 200 and (await resp.json())["queue"]["paused"] is False
        async with http.get(url + ":pause") as resp:
            assert resp.status == 405
        async with http.post(f"http://{http_system.scheduler.http_address}/v1/queues/{'x' * 201}:pause") as resp:
            assert resp.status == 404 and (await resp.json())["error"]["status"] == "NOT_FOUND"
