#!/usr/bin/env python3
"""stages: where a durable create's CPU goes, stage by stage, in one process.

ingest.py measures BatchCreateNotify through gRPC; this takes the same batches
(1,000 notifies, due in 1 hour, from workers.make_notify) apart, calling the
scheduler's own functions in the order the handler does:

  handler   NotifyServicer.BatchCreateNotify on a fresh SQLite store (durable default) and
            an engine with default settings, 4 calls in flight, with no network: each call
            parses the request from bytes and serializes its answer, as gRPC would on the
            loop thread. CPU per notify of the event loop's thread and of the store's writer
            thread, each read from its own thread clock
  stages    parts of that handler alone over one batch (the fastest of many repeats, each
            on inputs made for it): convert (convert.incoming), size and checks
            (validate.incoming_size, check_incoming: the spec's rules), id (the generator
            alone), row (codec.new_row), stored spec (codec.encode_rows), answer
            (created_bytes, answer_bytes, one parse). The handler's loop CPU less these is
            the rest: parsing and serializing, create_incoming's own loop (first state,
            partition, batch checks), the store's hand-off, and what the stages cost more in
            the handler's flow than alone (colder caches, the garbage collector)
  echo      what the gRPC echo server does per notify with the same batch (parse it, answer
            with its notifies, serialize that): the baseline

BatchCreateNotify at 100,000 notifies/s leaves the loop thread 10 us per notify, gRPC's own
work included. The RESULT line is the loop thread's CPU per notify in the handler against
the echo's work; a METRIC line puts it against that 10 us budget.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Metric, finish, say, setup_run, wait_quiet  # noqa: E402
from workers import make_notify  # noqa: E402

BATCH = 1000
INFLIGHT = 4
BUDGET_US = 10.0  # 1e6 / 100,000


def batch_bytes(pb, api) -> bytes:
    one = api.CreateNotifyRequest(notify=make_notify(pb, "http://127.0.0.1:9/hook", delay_s=3600))
    return api.BatchCreateNotifyRequest(requests=[one] * BATCH).SerializeToString()


def thread_cpu(ident: int) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(ident))


async def handler(raw: bytes, calls: int) -> dict:
    """The real handler on a real store: notifies/s and CPU per notify of both threads."""
    from notifyagent.scheduler.api.servicer import NotifyServicer
    from notifyagent.scheduler.app import make_store
    from notifyagent.scheduler.engine.core import Engine, EngineSettings
    from notifyagent.scheduler.engine.operations import Operations
    from notifyagent.v1 import notify_service_pb2 as api

    with tempfile.TemporaryDirectory(prefix="stages-") as d:
        store = make_store(f"sqlite:///{d}/notifyagent.db")
        await store.open()
        engine = Engine(store=store, settings=EngineSettings())
        await engine.start()
        try:
            servicer = NotifyServicer(Operations(engine, store))
            [writer] = [t for t in threading.enumerate() if t.name == "sqlite-writer"]
            left = 0

            async def worker() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    out = await servicer.BatchCreateNotify(api.BatchCreateNotifyRequest.FromString(raw), None)
                    out.SerializeToString()

            left = max(2, calls // 10)  # warm-up
            await asyncio.gather(*[worker() for _ in range(INFLIGHT)])
            left = calls
            t0, loop0, writer0 = time.perf_counter(), time.thread_time(), thread_cpu(writer.ident)
            await asyncio.gather(*[worker() for _ in range(INFLIGHT)])
            t1, loop1, writer1 = time.perf_counter(), time.thread_time(), thread_cpu(writer.ident)
        finally:
            await engine.stop()
            await store.close()
    n = calls * BATCH
    return {"rate": n / (t1 - t0), "loop_us": (loop1 - loop0) / n * 1e6, "writer_us": (writer1 - writer0) / n * 1e6}


def stages(raw: bytes, repeat: int) -> dict[str, float]:
    """µs per notify of each stage alone, over one batch: the fastest of `repeat` runs, with the
    garbage collector on (as in the handler). Each run gets inputs made for it, untimed: the row
    stage rewrites its messages in place (a delay becomes deliver_at), as the handler does once."""
    from notifyagent.scheduler.api import convert
    from notifyagent.scheduler.engine.limits import Limits
    from notifyagent.scheduler.engine.model import State
    from notifyagent.scheduler.engine.operations import Created
    from notifyagent.scheduler.engine.validate import check_incoming, incoming_size
    from notifyagent.scheduler.store import codec
    from notifyagent.common.ids import IdGenerator
    from notifyagent.v1 import notify_service_pb2 as api

    limits, now, gen = Limits(), int(time.time() * 1000), IdGenerator()

    def incoming(request) -> list:  # what the handler's first line makes of a request
        return [convert.incoming(r.notify, r.request_id, now_ms=now, created_by="") for r in request.requests]

    def fresh() -> list:  # the batch as the handler receives it: parsed, not yet normalized
        return incoming(api.BatchCreateNotifyRequest.FromString(raw))

    def with_ids(news) -> tuple[list, list]:
        return news, [Created(gen.new(now), State.PENDING, now + 3_600_000, now, "") for _ in news]

    def rows(news, made) -> list:  # the handler's rows; the messages become the stored spec in place
        return [codec.new_row(new, c.id, c.state, c.due_ms, now) for new, c in zip(news, made)]

    def stored(news, made) -> tuple[list, list]:
        rows(news, made)
        return news, made

    def echo(got):  # bench/workers.py's echo server, with gRPC's parse and serialize around it
        return api.BatchCreateNotifyResponse(notifies=[r.notify for r in got.requests]).SerializeToString()

    # name: (what the run gets, untimed; the stage, timed)
    parts = {
        "convert": (lambda: api.BatchCreateNotifyRequest.FromString(raw), incoming),
        "size and checks": (fresh, lambda news: [check_incoming(new, now_ms=now, limits=limits, size=incoming_size(new))
                                                 for new in news]),
        "id": (lambda: range(BATCH), lambda n: [gen.new(now) for _ in n]),
        "row": (lambda: with_ids(fresh()), lambda a: rows(*a)),
        "stored spec": (lambda: rows(*with_ids(fresh())), lambda r: codec.encode_rows(r, None)),
        "answer": (lambda: stored(*with_ids(fresh())), lambda a: api.BatchCreateNotifyResponse.FromString(
            convert.answer_bytes([convert.created_bytes(new, c) for new, c in zip(*a)]))),
        "echo's work": (lambda: raw, lambda b: echo(api.BatchCreateNotifyRequest.FromString(b))),
    }  # fmt: skip
    best = {name: float("inf") for name in parts}
    for _ in range(repeat):  # round-robin: a slow moment of the machine hits every stage alike
        for name, (prepare, stage) in parts.items():
            arg = prepare()
            t0 = time.perf_counter()
            stage(arg)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: t / BATCH * 1e6 for name, t in best.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one round of 20 calls and 20 repeats per stage (a few seconds)")
    a = ap.parse_args(argv)
    setup_run(a.quick)
    from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api

    try:
        import uvloop
    except ImportError:  # bench/setup installs it; without it the handler runs on asyncio's loop
        uvloop = None
    raw = batch_bytes(pb, api)
    calls, repeat, rounds = (20, 20, 1) if a.quick else (60, 50, 5)
    runs = []
    wait_quiet()
    for i in range(rounds):
        say(f"handler round {i + 1}/{rounds}: {calls} BatchCreateNotify calls of {BATCH:,}, {INFLIGHT} in flight")
        run = uvloop.run if uvloop else asyncio.run
        h = run(handler(raw, calls))
        say(f"  {h['rate']:,.0f} notifies/s; CPU per notify: loop thread {h['loop_us']:.1f} us, writer thread {h['writer_us']:.1f} us")
        runs.append(h)
    h = sorted(runs, key=lambda r: r["loop_us"])[len(runs) // 2]
    say(f"stages, each alone over one batch, fastest of {repeat}")
    st = stages(raw, repeat)
    work = sum(v for k, v in st.items() if k != "echo's work")
    checks = st["size and checks"]
    for name, us in st.items():
        say(f"  {name:16s} {us:6.2f} us per notify" + ("" if name == "echo's work" else f"  ({us / work:5.1%} of the stages)"))
    loop = h["loop_us"]
    say(f"  stages together {work:6.2f} us; the handler's loop thread {loop:.2f} us, so {loop - work:.2f} us elsewhere in it "
        "(parse and serialize, create_incoming's own loop, the store's hand-off, and what the same stages cost more"
        " inside the handler than alone: colder caches, the garbage collector)")
    say(f"  the stages without the checks: {work - checks:.2f} us = at most {1e6 / (work - checks):,.0f} notifies/s "
        "on one thread for them alone")  # fmt: skip
    headline = Metric("create_path_loop_cpu", loop, "us/notify", "grpc_echo_work", st["echo's work"], higher_is_better=False)
    metrics = [
        headline,
        Metric("create_path_loop_cpu", loop, "us/notify", "budget_for_100k_per_s", BUDGET_US, f"<= {BUDGET_US:g} us",
               loop <= BUDGET_US, higher_is_better=False),
        Metric("create_path_stages", work, "us/notify", "budget_for_100k_per_s", BUDGET_US, higher_is_better=False,
               note="the stages alone"),
        Metric("create_path_writer_cpu", h["writer_us"], "us/notify", "budget_for_100k_per_s", BUDGET_US, higher_is_better=False),
    ]  # fmt: skip
    details = {"handler": h, "handler_rounds": runs, "stages_us": st, "batch": BATCH, "inflight": INFLIGHT,
               "rate_median": statistics.median(r["rate"] for r in runs)}  # fmt: skip
    finish("stages", metrics, headline, quick=a.quick, argv=argv if argv is not None else sys.argv[1:], details=details)


if __name__ == "__main__":
    main()
