#!/usr/bin/env python3
"""burst: 2,000 notifies due in the same millisecond, and how late the last of them arrive.

Lateness as in delay.py (nginx $msec against the due time in X-Due-Ms). Each
system gets the same burst `trials` times; the trial with the median p99 is
reported with every trial's p99.

  project dev     `notifyagent dev` (scheduler and one dispatcher in one process),
                  all 2,000 created ahead with one deliver_at 3 s away
  project split   1 scheduler + 2 dispatcher processes, the same burst
  beanstalkd      -b (default fsync); its tube paused for 2 s (pause-tube), then 2,000
                  ready jobs put: all become reservable, and are due, when the pause
                  ends (a delay would spread their due times over the ~0.1 s the puts
                  take, as delay.py's burst does); 1 consumer process, and 2 consumer
                  processes (32 connections each, reserve -> POST -> delete)

The headline compares like with like: the split project (two processes send)
against beanstalkd with two consumer processes; dev against one consumer is
printed beside it.

With --before GIT_REV each project system is also measured built at GIT_REV
(cached in ~/.cache/notifyagent-bench/), just before the current checkout.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    Beanstalkd, Build, Metric, Nginx, Project, build_args, builds, common_args, finish, py_spy, run_dir, say, setup_run, start_worker, wait_count,
    wait_quiet, worker_result,
)
from delay import lateness, median_trial, stats  # noqa: E402

N = 2000


def project_runs(nginx: Nginx, logdir: Path, mode: str, trials: int, profile: bool, build: Build | None = None) -> dict:
    wait_quiet()
    tag = "-before" if build is not None and build.name == "before" else ""
    with build.active() if build is not None else _current():
        proj = Project(logdir, mode=mode).start()
    if build is not None:
        mode = f"{mode} ({build.label})"
    say(f"project {mode} on {proj.addr} (pids {proj.pids()})")
    base = ["na-load", "--addr", proj.addr, "--url", nginx.url(), "--due-header"]
    out = []
    try:
        mark = nginx.mark()
        worker_result(start_worker([*base, "--n", "500", "--batch", "100"], logdir=logdir, name=f"na-warm-{mode.split()[0]}{tag}"))
        wait_count(nginx, mark, 500, label="warm-up", timeout=60)
        for t in range(trials):
            due0 = int(time.time() * 1000) + 3000
            mark = nginx.mark()
            made = worker_result(start_worker([*base, "--n", str(N), "--batch", "500", "--inflight", "1",
                                               "--deliver-at-ms", str(due0)], logdir=logdir, name=f"na-burst-{mode.split()[0]}{tag}"))  # fmt: skip
            say(f"project {mode}: {made['done']:,} created, due {due0 - made['t1'] * 1000:.0f} ms after")
            spies = []
            if profile and t == 0:
                time.sleep(max(0.0, (due0 - 100) / 1000 - time.time()))
                spies = [py_spy(pid, f"burst-{mode.split()[0]}{tag}-{role}", seconds=3) for role, pid in proj.pids().items()]
            wait_count(nginx, mark, N, label=f"project {mode} burst", timeout=60)
            time.sleep(0.2)
            out.append(stats(f"project {mode} burst", lateness(nginx, mark), N))
            for s in spies:
                if s is not None:
                    s.wait(60)
    finally:
        proj.stop()
    return median_trial(out)


@contextlib.contextmanager
def _current():
    yield


def beanstalkd_runs(nginx: Nginx, logdir: Path, consumers: int, trials: int) -> dict:
    wait_quiet()
    bs = Beanstalkd(logdir).start()
    cons = [start_worker(["bs-consume", "--port", str(bs.port), "--concurrency", "32"], logdir=logdir, name=f"bs-consumer{i}")
            for i in range(consumers)]  # fmt: skip
    base = ["bs-produce", "--port", str(bs.port), "--url", nginx.url(), "--due-header"]
    out = []
    try:
        mark = nginx.mark()
        worker_result(start_worker([*base, "--n", "500"], logdir=logdir, name="bs-warm"))
        wait_count(nginx, mark, 500, label="warm-up", timeout=60, watch=cons)
        for _ in range(trials):
            mark = nginx.mark()
            worker_result(start_worker([*base, "--n", str(N), "--pause-s", "2"], logdir=logdir, name="bs-burst"))
            wait_count(nginx, mark, N, label=f"beanstalkd burst ({consumers} consumers)", timeout=60, watch=cons)
            time.sleep(0.2)
            out.append(stats(f"beanstalkd burst ({consumers} consumers)", lateness(nginx, mark), N))
    finally:
        for c in cons:
            c.send_signal(signal.SIGTERM)
        for c in cons:
            worker_result(c, timeout=30)
        bs.stop()
    return median_trial(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(ap)
    build_args(ap)
    a = ap.parse_args(argv)
    setup_run(a.quick)
    bs_ = builds(a.before)
    before = bs_[0] if a.before else None
    rb: dict = {"git": before.git} if before else {}
    trials = 1 if a.quick else 3
    logdir = run_dir("burst")
    nginx = Nginx(logdir).start()
    say(f"burst: {N:,} due in one millisecond, {trials} trial(s) per system; nginx {nginx.url()}; logs in {logdir}")
    try:
        if before:
            rb["project_split"] = project_runs(nginx, logdir, "split", trials, a.profile, before)
        split = project_runs(nginx, logdir, "split", trials, a.profile, bs_[-1] if before else None)
        bs2 = beanstalkd_runs(nginx, logdir, 2, trials)
        if before:
            rb["project_dev"] = project_runs(nginx, logdir, "dev", trials, a.profile, before)
        dev = project_runs(nginx, logdir, "dev", trials, a.profile, bs_[-1] if before else None)
        bs1 = beanstalkd_runs(nginx, logdir, 1, trials)
    finally:
        nginx.stop()
    complete = all(r["n"] == r["expected"] for r in (split, dev))
    early = split["early"] + dev["early"]
    m = [
        Metric("burst_split_p99", split["p99"], "ms", "beanstalkd_2consumers_burst_p99", bs2["p99"], "<= beanstalkd",
               split["p99"] <= bs2["p99"] and complete and early == 0, higher_is_better=False,
               note=f"{N:,} due in one ms; 1 scheduler + 2 dispatchers vs 2 consumer processes; median of {trials} trials "
                    f"(p99s: project {split['trials_p99']}, beanstalkd {bs2['trials_p99']})"),
        Metric("burst_split_max", split["max"], "ms", "beanstalkd_2consumers_burst_max", bs2["max"], higher_is_better=False),
        Metric("burst_dev_p99", dev["p99"], "ms", "beanstalkd_1consumer_burst_p99", bs1["p99"], higher_is_better=False,
               note=f"`notifyagent dev` (one process) vs 1 consumer process (p99s: project {dev['trials_p99']}, "
                    f"beanstalkd {bs1['trials_p99']})"),
        Metric("burst_dev_max", dev["max"], "ms", "beanstalkd_1consumer_burst_max", bs1["max"], higher_is_better=False),
        Metric("burst_early", early, "notifies", "beanstalkd_burst_early", bs1["early"] + bs2["early"], "0",
               early == 0 and complete, higher_is_better=False, note="deliveries before their due time (and every notify arrived)"),
    ]  # fmt: skip
    details = {"project_split": split, "project_dev": dev, "beanstalkd_2consumers": bs2, "beanstalkd_1consumer": bs1}
    if rb:
        details["before"] = rb
        for key, cur in (("split", split), ("dev", dev)):
            m.append(Metric(f"burst_{key}_p99", cur["p99"], "ms", f"before_{rb['git']}", rb[f"project_{key}"]["p99"], higher_is_better=False,
                            note=f"the same system built at git {rb['git']}, measured in this run (information)"))  # fmt: skip
    finish("burst", m, m[0], quick=a.quick, argv=sys.argv[1:] if argv is None else argv, details=details)


if __name__ == "__main__":
    main()
