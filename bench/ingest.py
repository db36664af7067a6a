#!/usr/bin/env python3
"""ingest: how fast the scheduler accepts durable notifies.

  unary   CreateNotify, 128 calls in flight from one client process (grpc.aio, one channel)
  batch   BatchCreateNotify of 1,000 notifies, 4 calls in flight

Each is measured in 3 rounds alternating with the echo server (the machine is
noisy); the table has the median round of each.

Against, on the same machine and with the same client code:
  grpc echo      a grpc.aio NotifyService whose CreateNotify / BatchCreateNotify return what they got
                 (same messages, same server options): the ceiling of Python gRPC here
  beanstalkd put greenstalk (one connection, one put at a time) and the asyncio client
                 (4 connections, 64 pipelined puts each), beanstalkd -b with its default fsync

The project runs `notifyagent scheduler` alone (no dispatcher) on a fresh SQLite
store with its durable default (WAL, synchronous=FULL: every group commit
fsyncs the WAL before any of its CreateNotify calls answers). The notifies are
due in 1 hour (beyond the 5-minute horizon), so what is measured is the
accept path: convert, validate, insert, commit, answer.

With --before GIT_REV the scheduler built at GIT_REV (cached in ~/.cache/notifyagent-bench/)
runs beside the current one: each round measures the echo, then both builds (which
goes first alternates from round to round).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    Beanstalkd, Metric, Project, build_args, builds, common_args, cpu_seconds, finish, fmt, free_port, py_spy, run_dir, say,
    setup_run, start_worker, stop, wait_port, wait_quiet, worker_result,
)

UNARY_INFLIGHT = 128
BATCH = 1000
BATCH_INFLIGHT = 4


def load(addr: str, logdir: Path, name: str, seconds: float, *, unary: bool) -> dict:
    args = ["na-load", "--addr", addr, "--url", "http://127.0.0.1:9/hook", "--seconds", str(seconds), "--delay-s", "3600"]
    args += ["--unary", "--inflight", str(UNARY_INFLIGHT)] if unary else ["--batch", str(BATCH), "--inflight", str(BATCH_INFLIGHT)]
    out = worker_result(start_worker(args, logdir=logdir, name=name), timeout=seconds + 120)
    out["rate"] = out["done"] / (out["t1"] - out["t0"])
    out["calls_rate"] = out["calls"] / (out["t1"] - out["t0"])
    say(f"{name}: {out['done']:,} notifies in {out['calls']:,} calls, {out['t1'] - out['t0']:.1f} s = {out['rate']:,.0f} notifies/s "
        f"({out['calls_rate']:,.0f} calls/s; latency p50 {fmt(out['lat_ms']['p50'])} ms, p99 {fmt(out['lat_ms']['p99'])} ms; "
        f"{out['errors']} errors)")  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(ap)
    ap.add_argument("--seconds", type=float, default=0, help="seconds per measured phase (default 15; 4 with --quick)")
    build_args(ap)
    a = ap.parse_args(argv)
    setup_run(a.quick)
    bs_ = builds(a.before)
    rb: dict = {"git": bs_[0].git} if a.before else {}  # the before build's phases, same keys as r
    secs = a.seconds or (4.0 if a.quick else 15.0)
    warm = 1.0 if a.quick else 3.0
    logdir = run_dir("ingest")
    say(f"ingest: {secs:.0f} s per phase; logs in {logdir}")
    r: dict = {}

    # The gRPC echo ceiling and the project, in alternating rounds (the machine is noisy): medians
    port = free_port()
    echo = start_worker(["echo-server", "--port", str(port)], logdir=logdir, name="echo-server")
    wait_port(port, proc=echo)
    echo_addr = f"127.0.0.1:{port}"
    rounds = 1 if a.quick else 3
    per = secs if a.quick else secs / rounds
    projects = {}
    try:
        load(echo_addr, logdir, "echo-warm", warm, unary=True)
        for kind in ("unary", "batch"):
            for b in bs_:  # with --before both schedulers run; the idle one waits
                with b.active():
                    proj = projects[(kind, b.name)] = Project(logdir, mode="scheduler").start()
                say(f"notifyagent scheduler ({b.label}) on {proj.addr} (pid {proj.pids()['scheduler']}), store {proj.store}")
                load(proj.addr, logdir, f"project-warm-{kind}-{b.name}", warm, unary=kind == "unary")
            runs: dict[str, list] = {"echo": [], "project": [], "before": []}
            for i in range(rounds):
                wait_quiet()
                runs["echo"].append(load(echo_addr, logdir, f"echo-{kind}-{i + 1}", per, unary=kind == "unary"))
                for b in bs_ if i % 2 == 0 else bs_[::-1]:  # alternating which build goes first
                    pid = projects[(kind, b.name)].pids()["scheduler"]
                    suffix = "-before" if b.name == "before" else ""
                    cpu0 = cpu_seconds(pid)
                    spy = py_spy(pid, f"ingest-{kind}{suffix}", seconds=max(3, per - 2)) if a.profile and i == 0 else None
                    out = load(projects[(kind, b.name)].addr, logdir, f"project-{kind}{suffix}-{i + 1}", per, unary=kind == "unary")
                    out["scheduler_cpu_s"] = cpu_seconds(pid) - cpu0
                    out["cpu_us_per_notify"] = out["scheduler_cpu_s"] / max(1, out["done"]) * 1e6
                    say(f"  scheduler ({b.label}) cpu {out['scheduler_cpu_s']:.1f} s = {out['cpu_us_per_notify']:.0f} us per notify")
                    runs["before" if b.name == "before" else "project"].append(out)
                    if spy is not None:
                        spy.wait(per + 60)
            for who in ("echo", "project", "before"):
                if not runs[who]:
                    continue
                ordered = sorted(runs[who], key=lambda o: o["rate"])
                med = dict(ordered[len(ordered) // 2])
                med["rounds"] = [round(o["rate"]) for o in runs[who]]
                if who == "before":
                    rb[f"project_{kind}"] = med
                else:
                    r[f"{who}_{kind}"] = med
            for b in bs_:
                projects[(kind, b.name)].stop()
    finally:
        for proj in projects.values():
            proj.stop()
        stop(echo)

    # beanstalkd put rate
    wait_quiet()
    bs = Beanstalkd(logdir).start()
    try:
        for name, extra in (("bs_put_greenstalk", []), ("bs_put_async", ["--conns", "4", "--depth", "64"])):
            out = worker_result(start_worker(["bs-produce", "--port", str(bs.port), "--seconds", str(secs), *extra],
                                             logdir=logdir, name=name), timeout=secs + 60)  # fmt: skip
            out["rate"] = out["done"] / (out["t1"] - out["t0"])
            out["mode"] = bs.mode
            r[name] = out
            say(f"beanstalkd put ({name}, {bs.mode}): {out['done']:,} in {out['t1'] - out['t0']:.1f} s = {out['rate']:,.0f}/s")
    finally:
        bs.stop()
    bs = Beanstalkd(logdir, fsync=0).start()
    try:
        out = worker_result(start_worker(["bs-produce", "--port", str(bs.port), "--seconds", str(secs), "--conns", "4", "--depth", "64"],
                                         logdir=logdir, name="bs_put_async_f0"), timeout=secs + 60)  # fmt: skip
        out["rate"] = out["done"] / (out["t1"] - out["t0"])
        out["mode"] = bs.mode
        r["bs_put_async_f0"] = out
        say(f"beanstalkd put (async, {bs.mode}): {out['rate']:,.0f}/s")
    finally:
        bs.stop()

    bs_best = max(r["bs_put_greenstalk"]["rate"], r["bs_put_async"]["rate"])
    bs_best_name = "beanstalkd_put_async" if r["bs_put_async"]["rate"] >= r["bs_put_greenstalk"]["rate"] else "beanstalkd_put_greenstalk"
    pu, pb = r["project_unary"]["rate"], r["project_batch"]["rate"]
    m = [
        Metric("ingest_batch", pb, "notifies/s", bs_best_name, bs_best, ">= 100,000/s", pb >= 100_000,
               note=f"BatchCreateNotify of {BATCH}, {BATCH_INFLIGHT} in flight, fsync per group commit; beanstalkd -b default fsync"),
        Metric("ingest_unary", pu, "calls/s", "grpc_echo_unary", r["echo_unary"]["rate"], ">= 0.8", pu >= 0.8 * r["echo_unary"]["rate"],
               note=f"CreateNotify, {UNARY_INFLIGHT} in flight, one client process"),
        Metric("ingest_batch", pb, "notifies/s", "grpc_echo_batch", r["echo_batch"]["rate"], note="information: the echo of the same batches"),
        Metric("ingest_unary", pu, "calls/s", "beanstalkd_put_greenstalk", r["bs_put_greenstalk"]["rate"],
               note="information: one connection, one put at a time"),
        Metric("ingest_batch", pb, "notifies/s", "beanstalkd_put_async_fsync_every_put", r["bs_put_async_f0"]["rate"],
               note="information: beanstalkd -f0"),
    ]  # fmt: skip
    if rb:
        r["before"] = rb
        base = f"before_{rb['git']}"
        for kind, unit in (("batch", "notifies/s"), ("unary", "calls/s")):
            cur, old = r[f"project_{kind}"], rb[f"project_{kind}"]
            m.append(Metric(f"ingest_{kind}", cur["rate"], unit, base, old["rate"],
                            note=f"the same scheduler built at git {rb['git']}, measured in the same rounds (information)"))  # fmt: skip
            m.append(Metric(f"ingest_{kind}_scheduler_cpu", cur["cpu_us_per_notify"], "µs/notify", f"{base}_scheduler_cpu",
                            old["cpu_us_per_notify"], higher_is_better=False, note="scheduler CPU per accepted notify, current / before"))  # fmt: skip
    finish("ingest", m, m[0], quick=a.quick, argv=sys.argv[1:] if argv is None else argv, details=r)


if __name__ == "__main__":
    main()
