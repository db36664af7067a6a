"""An answer whose body cannot be read (a read timeout, a connection closed mid-body) is
retried like any transport error, whatever the success criteria."""

import asyncio

from aiohttp import web

from notifyagent.v1 import notify_pb2 as pb
from support import fast_retry


async def _server(handler):
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


async def test_read_timeout_and_cut_body_are_retried_with_body_contains(system):
    calls = {"slow": 0, "cut": 0}

    async def handler(request: web.Request):
        kind = request.path.strip("/")
        calls[kind] += 1
        resp = web.StreamResponse(status=200, headers={"Content-Length": "100"})
        await resp.prepare(request)
        await resp.write(b"partial ")
        if calls[kind] < 3:
            if kind == "slow":
                await asyncio.sleep(5)  # longer than the attempt timeout
            request.transport.close()  # the connection ends mid-body
            return resp
        await resp.write(b"done".ljust(92))
        return resp

    runner, port = await _server(handler)
    try:
        ids = []
        for kind in ("slow", "cut"):
            n = await system.create(
                "", request=pb.HttpRequest(method=pb.HTTP_METHOD_GET, url=f"http://127.0.0.1:{port}/{kind}"),
                success=pb.SuccessCriteria(body_contains="done"), retry=fast_retry(max_attempts=5),
                timeout=pb.Notify(timeout={"nanos": 500_000_000}).timeout,
            )  # fmt: skip
            ids.append(n.id)
        for notify_id in ids:
            done = await system.wait_state(notify_id, pb.STATE_SUCCEEDED, timeout=30)
            assert len(done.attempts) == 3
            first = done.attempts[0]
            assert first.error.startswith("HTTP 200, then reading the body"), first.error
            assert not first.success
    finally:
        await runner.cleanup()
    assert calls == {"slow": 3, "cut": 3}
