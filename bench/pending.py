#!/usr/bin/env python3
"""pending: memory with many delayed notifies pending, and restart time.

Project (durable defaults, SQLite WAL synchronous=FULL):
  1. `notifyagent scheduler` alone; BatchCreateNotify (1,000 per call, 4 in flight)
     creates N notifies due in 1 h to 25 h (beyond the 5-minute horizon: they live
     only in the store, as the design says). Scheduler VmRSS (and VmHWM) from /proc.
  2. One probe notify due 300 ms later; SIGTERM; once the probe is overdue, start
     `notifyagent dev` (scheduler + dispatcher in one process) on the same store:
     seconds from the spawn to SERVING, and to the probe's arrival at nginx.
  3. On that process, M more notifies due in 200-260 s (within the horizon: held
     in the timer wheel): the VmRSS growth per notify held in memory.

beanstalkd (-b, default fsync), the same N jobs (same URL and JSON body, delays
1 h to 25 h) put with the asyncio client (4 connections, 64 pipelined puts each):
its VmRSS; then a probe job (delay 1 s), SIGTERM, restart on the same binlog dir
with a consumer already waiting to connect: seconds to listening, and to the
probe's arrival.

N = 1,000,000 (50,000 with --quick; 10,000,000 with --full), M = 100,000 (10,000 with --quick).

With --before GIT_REV the project side also runs built at GIT_REV (cached in
~/.cache/notifyagent-bench/), on a store of its own, just before the current checkout.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    Beanstalkd, Metric, Nginx, Project, build_args, builds, common_args, dir_size, finish, follow_worker, get_status, rss_kib, run_dir,
    say, setup_run, start_worker, wait_count, wait_quiet, worker_result,
)

MIB = 1024


def project_side(nginx: Nginx, logdir: Path, n: int, m: int) -> dict:
    out: dict = {"n": n, "m": m, "busy_before": wait_quiet()}
    proj = Project(logdir, mode="scheduler").start()
    pid = proj.pids()["scheduler"]
    out["rss_empty_kib"] = rss_kib(pid)[0]
    say(f"project scheduler pid {pid} on {proj.addr}, store {proj.db}; RSS empty {out['rss_empty_kib'] / MIB:.1f} MiB")
    t = time.time()
    w = start_worker(["na-load", "--addr", proj.addr, "--url", nginx.url(), "--n", str(n), "--batch", "1000", "--inflight", "4",
                      "--delay-s", "3600", "--delay-spread", "86400"], logdir=logdir, name="na-create")  # fmt: skip
    made = follow_worker(w, "project create", extra=lambda: f"scheduler RSS {rss_kib(pid)[0] / MIB:.0f} MiB")
    out["create_rate"] = made["done"] / (made["t1"] - made["t0"])
    out["create_s"] = time.time() - t
    time.sleep(2)
    out["rss_kib"], out["hwm_kib"] = rss_kib(pid)
    st = get_status(proj.addr, timeout=120)
    out["counts"] = {int(c.state): c.count for c in st.counts}
    out["wheel_size"] = st.wheel_size
    out["store_bytes"] = dir_size(proj.db.parent)
    say(f"project: {made['done']:,} pending created at {out['create_rate']:,.0f}/s; scheduler RSS {out['rss_kib'] / MIB:.1f} MiB "
        f"(peak {out['hwm_kib'] / MIB:.1f}); wheel {st.wheel_size:,}; store {out['store_bytes'] / 2**20:.0f} MiB")  # fmt: skip

    # restart: a probe due in 300 ms, stop, then start `dev` once the probe is overdue
    probe = worker_result(start_worker(["na-load", "--addr", proj.addr, "--url", nginx.url(), "--n", "1", "--batch", "1",
                                        "--due-in-ms", "300", "--due-header"], logdir=logdir, name="na-probe"))  # fmt: skip
    t_stop = time.monotonic()
    proj.stop()
    out["stop_s"] = time.monotonic() - t_stop
    time.sleep(max(0.0, probe["t1"] + 0.8 - time.time()))
    mark = nginx.mark()
    t_spawn = time.time()
    dev = Project(logdir, mode="dev", store=proj.store, port=proj.port)
    dev.start(wait_dispatchers=False)
    out["restart_ready_s"] = time.time() - t_spawn
    wait_count(nginx, mark, 1, label="probe after restart", timeout=120)
    arrival = nginx.lines_since(mark)[0][0]
    out["restart_first_due_s"] = arrival - t_spawn
    dpid = dev.pids()["dev"]
    time.sleep(1)
    out["rss_after_restart_kib"] = rss_kib(dpid)[0]
    say(f"project restart: SERVING after {out['restart_ready_s']:.2f} s, overdue probe sent {out['restart_first_due_s']:.2f} s "
        f"after the spawn (stop took {out['stop_s']:.2f} s); dev RSS {out['rss_after_restart_kib'] / MIB:.1f} MiB")  # fmt: skip

    # memory per notify held in the timer wheel
    before = rss_kib(dpid)[0]
    w = start_worker(["na-load", "--addr", dev.addr, "--url", nginx.url(), "--n", str(m), "--batch", "1000", "--inflight", "4",
                      "--delay-s", "200", "--delay-spread", "60"], logdir=logdir, name="na-horizon")  # fmt: skip
    follow_worker(w, "project create (within horizon)")
    time.sleep(2)
    after = rss_kib(dpid)[0]
    out["in_memory_bytes_per_notify"] = (after - before) * 1024 / m
    out["rss_with_horizon_kib"] = after
    say(f"project: {m:,} more within the horizon: RSS +{(after - before) / MIB:.1f} MiB = "
        f"{out['in_memory_bytes_per_notify']:.0f} bytes per notify held in memory")  # fmt: skip
    dev.stop()
    return out


def beanstalkd_side(nginx: Nginx, logdir: Path, n: int) -> dict:
    out: dict = {"n": n, "busy_before": wait_quiet()}
    bs = Beanstalkd(logdir).start()
    pid = bs.proc.pid
    out["mode"] = bs.mode
    out["rss_empty_kib"] = rss_kib(pid)[0]
    w = start_worker(["bs-produce", "--port", str(bs.port), "--url", nginx.url(), "--n", str(n), "--conns", "4", "--depth", "64",
                      "--delay", "3600", "--delay-spread", "86400"], logdir=logdir, name="bs-create")  # fmt: skip
    made = follow_worker(w, "beanstalkd put", extra=lambda: f"beanstalkd RSS {rss_kib(pid)[0] / MIB:.0f} MiB")
    out["put_rate"] = made["done"] / (made["t1"] - made["t0"])
    time.sleep(2)
    out["rss_kib"], out["hwm_kib"] = rss_kib(pid)
    out["binlog_bytes"] = dir_size(bs.dir)
    out["delayed"] = int(bs.stats().get("current-jobs-delayed", 0))
    say(f"beanstalkd: {out['delayed']:,} delayed jobs; RSS {out['rss_kib'] / MIB:.1f} MiB; binlog {out['binlog_bytes'] / 2**20:.0f} MiB")

    worker_result(start_worker(["bs-produce", "--port", str(bs.port), "--url", nginx.url(), "--n", "1", "--delay", "1",
                                "--due-header"], logdir=logdir, name="bs-probe"))  # fmt: skip
    t_probe = time.time()
    bs.stop()
    time.sleep(max(0.0, t_probe + 1.8 - time.time()))
    mark = nginx.mark()
    cons = start_worker(["bs-consume", "--port", str(bs.port), "--concurrency", "32"], logdir=logdir, name="bs-consumer")
    t_spawn = time.time()
    bs.start()
    out["restart_ready_s"] = time.time() - t_spawn
    try:
        wait_count(nginx, mark, 1, label="probe after restart", timeout=600, watch=[cons])
        arrival = nginx.lines_since(mark)[0][0]
        out["restart_first_due_s"] = arrival - t_spawn
        out["rss_after_restart_kib"] = rss_kib(bs.proc.pid)[0]
    finally:
        cons.send_signal(signal.SIGTERM)
        worker_result(cons, timeout=30)
        bs.stop()
    say(f"beanstalkd restart: port open after {out['restart_ready_s']:.2f} s (the binlog replays after that), overdue probe sent "
        f"{out['restart_first_due_s']:.2f} s after the spawn; RSS {out['rss_after_restart_kib'] / MIB:.1f} MiB")  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(ap)
    ap.add_argument("--full", action="store_true", help="10,000,000 notifies in the store (takes long: tens of minutes)")
    ap.add_argument("--n", type=int, default=0, help="pending notifies (overrides the default size)")
    build_args(ap)
    a = ap.parse_args(argv)
    setup_run(a.quick)
    bs_ = builds(a.before)
    rb: dict = {"git": bs_[0].git} if a.before else {}
    n = a.n or (50_000 if a.quick else 10_000_000 if a.full else 1_000_000)
    m = 10_000 if a.quick else 100_000
    logdir = run_dir("pending")
    nginx = Nginx(logdir).start()
    say(f"pending: {n:,} delayed notifies; logs in {logdir}")
    try:
        if rb:
            say(f"project side built at git {rb['git']} (before)")
            with bs_[0].active():
                rb["project"] = project_side(nginx, logdir, n, m)
            say("project side, current checkout")
        p = project_side(nginx, logdir, n, m)
        b = beanstalkd_side(nginx, logdir, n)
    finally:
        nginx.stop()
    mib = lambda k: k / MIB  # noqa: E731
    metrics = [
        Metric("pending_rss", mib(p["rss_kib"]), "MiB", "beanstalkd_rss", mib(b["rss_kib"]), "<= 0.5", p["rss_kib"] <= 0.5 * b["rss_kib"],
               higher_is_better=False, note=f"{n:,} delayed notifies pending (due in 1-25 h); scheduler VmRSS vs beanstalkd VmRSS"),
        Metric("restart_first_due", p["restart_first_due_s"], "s", "beanstalkd_restart_first_due", b["restart_first_due_s"], "<= 1 s",
               p["restart_first_due_s"] <= 1.0, higher_is_better=False,
               note="from spawning the process to the overdue probe's arrival; project: `notifyagent dev` on the same store"),
        Metric("restart_ready", p["restart_ready_s"], "s", "beanstalkd_restart_listening", b["restart_ready_s"], higher_is_better=False,
               note="project: health SERVING; beanstalkd: port open (it replays its binlog after opening the port)"),
        Metric("pending_peak_rss", mib(p["hwm_kib"]), "MiB", "beanstalkd_peak_rss", mib(b["hwm_kib"]), higher_is_better=False),
        Metric("in_memory_bytes_per_notify", p["in_memory_bytes_per_notify"], "bytes", "beanstalkd_bytes_per_job",
               (b["rss_kib"] - b["rss_empty_kib"]) * 1024 / n, higher_is_better=False,
               note="project: RSS growth per notify held in the timer wheel (due within the horizon)"),
        Metric("pending_create_rate", p["create_rate"], "notifies/s", "beanstalkd_put_rate", b["put_rate"],
               note="filling the store: BatchCreateNotify of 1,000 vs pipelined puts"),
        Metric("pending_disk", p["store_bytes"] / 2**20, "MiB", "beanstalkd_binlog", b["binlog_bytes"] / 2**20, higher_is_better=False),
    ]  # fmt: skip
    details = {"project": p, "beanstalkd": b}
    if rb:
        details["before"] = rb
        o, base = rb["project"], f"before_{rb['git']}"
        info = f"the same project side built at git {rb['git']}, measured in this run (information)"
        metrics += [
            Metric("pending_rss", mib(p["rss_kib"]), "MiB", base, mib(o["rss_kib"]), higher_is_better=False, note=info),
            Metric("in_memory_bytes_per_notify", p["in_memory_bytes_per_notify"], "bytes", base, o["in_memory_bytes_per_notify"],
                   higher_is_better=False, note=info),
            Metric("pending_create_rate", p["create_rate"], "notifies/s", base, o["create_rate"], note=info),
            Metric("restart_first_due", p["restart_first_due_s"], "s", base, o["restart_first_due_s"], higher_is_better=False, note=info),
        ]  # fmt: skip
    finish("pending", metrics, metrics[0], quick=a.quick, argv=sys.argv[1:] if argv is None else argv, details=details)


if __name__ == "__main__":
    main()
