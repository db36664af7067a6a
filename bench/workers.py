"""Load generators and baseline workers, each run in its own process by the benchmarks.

    python bench/workers.py ROLE [options]

Roles:
  bare         the bare aiohttp loop: N POSTs to a URL, C in flight, one pooled session
  bs-consume   beanstalkd consumer: C connections, each reserve -> POST -> delete (until SIGTERM)
  bs-produce   beanstalkd producer (greenstalk, or the asyncio client with --conns): N puts or for --seconds
  na-load      NotifyAgent client: CreateNotify (unary) or BatchCreateNotify, K in flight, N notifies or --seconds
  echo-server  a grpc.aio NotifyService that echoes CreateNotify/BatchCreateNotify (the gRPC ceiling)

Each prints one JSON line with its numbers last on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time

BODY = '{"event":"order.paid","order_id":1234567,"amount":"19.90","currency":"EUR"}'


def emit(doc: dict) -> None:
    print(json.dumps(doc), flush=True)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def use_uvloop(flag: bool) -> None:
    if flag:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# --- bare aiohttp loop --------------------------------------------------------


async def bare(a) -> None:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=a.concurrency, limit_per_host=0)
    left = a.n
    done = 0
    headers = {"Content-Type": "application/json", "Notify-Id": "bare"}
    body = BODY.encode()
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
        async def worker() -> None:
            nonlocal left, done
            while left > 0:
                left -= 1
                async with session.post(a.url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status == 200:
                        done += 1

        t0 = time.time()
        await asyncio.gather(*(worker() for _ in range(a.concurrency)))
        t1 = time.time()
    emit({"done": done, "t0": t0, "t1": t1})


# --- beanstalkd ---------------------------------------------------------------


async def bs_consume(a) -> None:
    import aiohttp

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from beanstalk import AsyncBeanstalk

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    done = 0
    errors = 0
    connector = aiohttp.TCPConnector(limit=a.concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
        async def worker() -> None:
            nonlocal done, errors
            for _ in range(6000):  # beanstalkd may still be starting (pending: a restart replaying its binlog)
                try:
                    conn = await AsyncBeanstalk.connect("127.0.0.1", a.port)
                    break
                except OSError:
                    await asyncio.sleep(0.01)
            else:
                raise RuntimeError("beanstalkd never answered")
            try:
                job = await conn.reserve(timeout=1)
                while not stopping.is_set():
                    if job is None:
                        job = await conn.reserve(timeout=1)
                        continue
                    jid, data = job
                    doc = json.loads(data)
                    headers = {"Content-Type": "application/json", "Notify-Id": str(jid)}
                    if "due_ms" in doc:
                        headers["X-Due-Ms"] = str(doc["due_ms"])
                    try:
                        async with session.post(doc["url"], data=doc["body"].encode(), headers=headers) as resp:
                            await resp.read()
                            ok = 200 <= resp.status < 300
                    except aiohttp.ClientError:
                        ok = False
                    if ok:
                        done += 1
                    else:  # the original worker released failed jobs for a retry; none fail here
                        errors += 1
                    # delete this job and reserve the next in one round trip
                    job = await conn.delete_and_reserve(jid, timeout=1)
            finally:
                await conn.close()

        tasks = [asyncio.create_task(worker()) for _ in range(a.concurrency)]
        await stopping.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    emit({"done": done, "errors": errors})


def _job(url: str, due_ms: float | None = None) -> bytes:
    doc = {"url": url, "method": "POST", "body": BODY}
    if due_ms is not None:
        doc["due_ms"] = int(due_ms) if due_ms == int(due_ms) else round(due_ms, 3)
    return json.dumps(doc, separators=(",", ":")).encode()


def bs_produce_greenstalk(a) -> None:
    """One connection, one put at a time (greenstalk, as a PHP/Python service would)."""
    import greenstalk

    client = greenstalk.Client(("127.0.0.1", a.port))
    n = 0
    t0 = time.time()
    due_at = None
    if a.pause_s:  # every job due at one moment: ready jobs in a tube paused until then
        due_at = time.time() * 1000 + a.pause_s * 1000
        client.pause_tube("default", a.pause_s)
    until = t0 + a.seconds if a.seconds else None
    interval = 1.0 / a.rate if a.rate else 0.0
    next_at = time.monotonic()
    last_log = time.monotonic()
    while (a.n and n < a.n) or (until and time.time() < until):
        if interval:
            next_at += interval
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        now_ms = time.time() * 1000
        due = (due_at or now_ms + a.delay * 1000) if a.due_header else None
        client.put(_job(a.url, due), delay=a.delay, ttr=60)
        n += 1
        if time.monotonic() - last_log > 2:
            log(f"put {n}")
            last_log = time.monotonic()
    t1 = time.time()
    client.close()
    emit({"done": n, "t0": t0, "t1": t1})


async def bs_produce_async(a) -> None:
    """--conns connections, each pipelining up to --depth puts."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from beanstalk import AsyncBeanstalk

    total = 0
    t0 = time.time()
    until = t0 + a.seconds if a.seconds else None
    per_conn = -(-a.n // a.conns) if a.n else 0
    spread = a.delay_spread

    async def conn_loop(i: int) -> None:
        nonlocal total
        conn = await AsyncBeanstalk.connect("127.0.0.1", a.port)
        mine = 0
        pending = 0
        rnd = (i * 7919) % 1000
        while True:
            more = (per_conn and mine < per_conn) or (until and time.time() < until)
            if more and pending < a.depth:
                delay = a.delay + (rnd * 104729 + mine * 7) % spread if spread else a.delay
                conn.put_nowait(_job(a.url), delay=delay)
                mine += 1
                pending += 1
                continue
            if not pending:
                break
            line = await conn.answer()
            if not line.startswith(b"INSERTED"):
                raise RuntimeError(line.decode())
            pending -= 1
            total += 1
        await conn.close()

    async def progress() -> None:
        while True:
            await asyncio.sleep(2)
            log(f"put {total}")

    p = asyncio.create_task(progress())
    await asyncio.gather(*(conn_loop(i) for i in range(a.conns)))
    p.cancel()
    emit({"done": total, "t0": t0, "t1": time.time()})


# --- NotifyAgent client ---------------------------------------------------------


def make_notify(pb, url: str, *, deliver_at_ms: int | None = None, delay_s: float | None = None, due_header: bool = False):
    n = pb.Notify(request=pb.HttpRequest(method=pb.HTTP_METHOD_POST, url=url, json_body=BODY))
    if deliver_at_ms is not None:
        n.deliver_at.FromMilliseconds(deliver_at_ms)
        if due_header:
            n.request.headers["X-Due-Ms"] = str(deliver_at_ms)
    elif delay_s:
        n.delay.FromNanoseconds(int(delay_s * 1e9))
    return n


async def na_load(a) -> None:
    import grpc

    from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api, notify_service_pb2_grpc as api_grpc

    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    channels = [grpc.aio.insecure_channel(a.addr, options=options + [("grpc.channel_id", i)]) for i in range(a.channels)]
    stubs = [api_grpc.NotifyServiceStub(ch) for ch in channels]
    for ch in channels:
        await asyncio.wait_for(ch.channel_ready(), 30)

    t_start = time.time()
    until = t_start + a.seconds if a.seconds else None
    left = a.n if a.n else 1 << 62
    done = 0
    calls = 0
    errors = 0
    lat: list[float] = []
    interval = 1.0 / a.rate if a.rate else 0.0
    next_at = time.monotonic()
    spread_i = 0
    per_call = 1 if a.unary else a.batch

    def one(now_ms: int):
        nonlocal spread_i
        if a.deliver_at_ms:  # fixed due times spread evenly over --spread-ms
            at = a.deliver_at_ms + (spread_i * a.spread_ms) // max(1, a.n - 1) if a.spread_ms else a.deliver_at_ms
            spread_i += 1
            return make_notify(pb, a.url, deliver_at_ms=at, due_header=a.due_header)
        if a.due_in_ms:
            return make_notify(pb, a.url, deliver_at_ms=now_ms + a.due_in_ms, due_header=a.due_header)
        if a.delay_s and a.delay_spread:  # delays spread over --delay-spread seconds
            spread_i += 1
            return make_notify(pb, a.url, delay_s=a.delay_s + (spread_i * 7919) % int(a.delay_spread))
        return static_notify  # the same message every time: built once

    static = not (a.deliver_at_ms or a.due_in_ms or (a.delay_s and a.delay_spread))
    static_notify = make_notify(pb, a.url, delay_s=a.delay_s or None)
    static_unary = api.CreateNotifyRequest(notify=static_notify)
    static_batches: dict[int, object] = {}

    def batch_request(take: int, now_ms: int):
        if static:
            if take not in static_batches:
                static_batches[take] = api.BatchCreateNotifyRequest(requests=[static_unary] * take)
            return static_batches[take]
        return api.BatchCreateNotifyRequest(requests=[api.CreateNotifyRequest(notify=one(now_ms)) for _ in range(take)])

    async def worker(k: int) -> None:
        nonlocal left, done, calls, errors, next_at
        stub = stubs[k % len(stubs)]
        while left > 0 and (until is None or time.time() < until):
            if interval:
                next_at += interval
                pause = next_at - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
            take = min(per_call, left)
            left -= take
            now_ms = int(time.time() * 1000)
            t = time.perf_counter()
            try:
                if a.unary:
                    req = static_unary if static else api.CreateNotifyRequest(notify=one(now_ms))
                    await stub.CreateNotify(req, timeout=60)
                else:
                    await stub.BatchCreateNotify(batch_request(take, now_ms), timeout=120)
            except grpc.RpcError as e:
                errors += 1
                if errors <= 5:
                    log(f"error: {e.code()} {e.details()}")
                continue
            lat.append(time.perf_counter() - t)
            done += take
            calls += 1

    async def progress() -> None:
        last = 0
        while True:
            await asyncio.sleep(2)
            log(f"created {done} ({(done - last) / 2:.0f}/s)")
            last = done

    p = asyncio.create_task(progress())
    t0 = time.time()
    await asyncio.gather(*(worker(k) for k in range(a.inflight)))
    t1 = time.time()
    p.cancel()
    for ch in channels:
        await ch.close()
    lat.sort()
    pct = (lambda q: lat[min(len(lat) - 1, int(q * (len(lat) - 1)))] * 1000 if lat else None)
    emit({"done": done, "calls": calls, "errors": errors, "t0": t0, "t1": t1,
          "lat_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": lat[-1] * 1000 if lat else None}})  # fmt: skip


# --- gRPC echo server -----------------------------------------------------------


async def echo_server(a) -> None:
    import grpc

    from notifyagent.v1 import notify_service_pb2 as api, notify_service_pb2_grpc as api_grpc

    class Echo(api_grpc.NotifyServiceServicer):
        async def CreateNotify(self, request, context):
            return api.CreateNotifyResponse(notify=request.notify)

        async def BatchCreateNotify(self, request, context):
            return api.BatchCreateNotifyResponse(notifies=[r.notify for r in request.requests])

    # the same options the project's server uses (services/common/grpcutil.py)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20),
                                      ("grpc.max_send_message_length", 64 << 20), ("grpc.so_reuseport", 0)])  # fmt: skip
    api_grpc.add_NotifyServiceServicer_to_server(Echo(), server)
    server.add_insecure_port(f"127.0.0.1:{a.port}")
    await server.start()
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    log(f"echo server on 127.0.0.1:{a.port}")
    await stopping.wait()
    await server.stop(0.5)
    emit({"stopped": True})


# --- main -----------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="role", required=True)

    p = sub.add_parser("bare")
    p.add_argument("--url", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=128)
    p.add_argument("--uvloop", action="store_true")

    p = sub.add_parser("bs-consume")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=128)
    p.add_argument("--uvloop", action="store_true")

    p = sub.add_parser("bs-produce")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--url", default="http://127.0.0.1:9/")
    p.add_argument("--n", type=int, default=0)
    p.add_argument("--seconds", type=float, default=0)
    p.add_argument("--delay", type=int, default=0, help="beanstalkd delay in whole seconds")
    p.add_argument("--delay-spread", type=int, default=0, help="async only: delays spread over this many seconds")
    p.add_argument("--pause-s", type=int, default=0,
                   help="greenstalk only: pause the tube this many seconds first and put ready jobs, all due when it ends")
    p.add_argument("--rate", type=float, default=0, help="puts per second (0: as fast as it goes)")
    p.add_argument("--due-header", action="store_true", help="put the due time (ms) in the job, for X-Due-Ms")
    p.add_argument("--conns", type=int, default=0, help="use the asyncio client with this many connections")
    p.add_argument("--depth", type=int, default=64, help="pipelined puts per connection (asyncio client)")

    p = sub.add_parser("na-load")
    p.add_argument("--addr", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--n", type=int, default=0)
    p.add_argument("--seconds", type=float, default=0)
    p.add_argument("--unary", action="store_true")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--inflight", type=int, default=4)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--rate", type=float, default=0, help="calls per second over all workers (0: as fast as it goes)")
    p.add_argument("--deliver-at-ms", type=int, default=0)
    p.add_argument("--spread-ms", type=int, default=0)
    p.add_argument("--due-in-ms", type=int, default=0)
    p.add_argument("--delay-s", type=float, default=0)
    p.add_argument("--delay-spread", type=float, default=0)
    p.add_argument("--due-header", action="store_true")

    p = sub.add_parser("echo-server")
    p.add_argument("--port", type=int, required=True)

    a = ap.parse_args()
    if a.role == "bare":
        use_uvloop(a.uvloop)
        asyncio.run(bare(a))
    elif a.role == "bs-consume":
        use_uvloop(a.uvloop)
        asyncio.run(bs_consume(a))
    elif a.role == "bs-produce":
        if a.conns:
            asyncio.run(bs_produce_async(a))
        else:
            bs_produce_greenstalk(a)
    elif a.role == "na-load":
        asyncio.run(na_load(a))
    elif a.role == "echo-server":
        asyncio.run(echo_server(a))


if __name__ == "__main__":
    main()
