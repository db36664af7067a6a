#!/usr/bin/env python3
"""delay: how late (and never how early) delayed notifies arrive.

Lateness = arrival at nginx ($msec, millisecond resolution, truncated) minus the
due time the sender put in X-Due-Ms (the project: the notify's deliver_at, set
explicitly; beanstalkd: the producer's clock just before the put plus the
delay, floored to the millisecond). A negative lateness is an early delivery.

Scenarios, for the project (`notifyagent dev`, durable defaults) and for
beanstalkd (-b, default fsync; one asyncio consumer process, 32 connections,
reserve -> POST -> delete):

  spread  2,000 due within one second (3 trials; the median trial by p99 is reported): the project's created ahead with
          deliver_at evenly over 1 s; beanstalkd's put at 2,000/s with delay 2 s
          (beanstalkd delays are whole seconds), so they come due evenly over 1 s
  burst   2,000 due at once: the project's with one deliver_at; beanstalkd's put
          as fast as it goes with delay 2 s (due within the ~0.1 s the puts take)
  paced   a steady load: 500/s for 10 s, each due 1 s after it was sent
          (project: unary CreateNotify with deliver_at = now + 1 s)
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    Beanstalkd, Metric, Nginx, Project, common_args, finish, fmt, percentile, run_dir, say, setup_run, start_worker,
    wait_count, wait_quiet, worker_result,
)


def lateness(nginx: Nginx, mark: int) -> list[float]:
    out = []
    for arrival, due, _ in nginx.lines_since(mark):
        if due != "-":
            out.append(math.floor(arrival * 1000 + 1e-6) - math.floor(float(due)))
    return out


def stats(label: str, lat: list[float], expected: int) -> dict:
    lat = sorted(lat)
    s = {"n": len(lat), "expected": expected, "early": sum(1 for x in lat if x < 0),
         "p50": percentile(lat, 50), "p99": percentile(lat, 99), "max": lat[-1] if lat else float("nan"),
         "min": lat[0] if lat else float("nan")}  # fmt: skip
    say(f"{label}: {s['n']:,}/{expected:,} arrived; lateness ms p50 {fmt(s['p50'])}, p99 {fmt(s['p99'])}, "
        f"max {fmt(s['max'])}, min {fmt(s['min'])}; early {s['early']}")  # fmt: skip
    return s


def median_trial(trials: list[dict]) -> dict:
    """The trial with the median p99; every trial's p99 and the early count of all are kept with it."""
    med = dict(sorted(trials, key=lambda t: t["p99"])[len(trials) // 2])
    med["trials_p99"] = [t["p99"] for t in trials]
    med["trials_max"] = [t["max"] for t in trials]
    med["early"] = sum(t["early"] for t in trials)
    med["n"] = sum(t["n"] for t in trials) // len(trials) if all(t["n"] == t["expected"] for t in trials) else min(t["n"] for t in trials)
    return med


def project_runs(nginx: Nginx, logdir: Path, sizes: dict) -> dict:
    wait_quiet()
    proj = Project(logdir, mode="dev").start()
    say(f"project dev on {proj.addr}")
    out = {}
    base = ["na-load", "--addr", proj.addr, "--url", nginx.url(), "--due-header"]
    try:
        # warm-up: a few immediate ones
        mark = nginx.mark()
        worker_result(start_worker([*base, "--n", "500", "--batch", "100"], logdir=logdir, name="na-warm"))
        wait_count(nginx, mark, 500, label="warm-up", timeout=60)
        trials = []
        for scen in ["spread"] * sizes["trials"] + ["burst"]:
            n = sizes["n"]
            due0 = int(time.time() * 1000) + 3000
            mark = nginx.mark()
            spread = ["--spread-ms", "1000"] if scen == "spread" else []
            made = worker_result(start_worker([*base, "--n", str(n), "--batch", "500", "--inflight", "1",
                                               "--deliver-at-ms", str(due0), *spread], logdir=logdir, name=f"na-{scen}"))  # fmt: skip
            say(f"project {scen}: {made['done']:,} created in {made['t1'] - made['t0']:.2f} s, due from {due0 - made['t1'] * 1000:.0f} ms after")
            wait_count(nginx, mark, n, label=f"project {scen}", timeout=60)
            time.sleep(0.2)
            out[scen] = stats(f"project {scen}", lateness(nginx, mark), n)
            if scen == "spread":
                trials.append(out[scen])
        out["spread"] = median_trial(trials)
        rate, secs = sizes["rate"], sizes["seconds"]
        mark = nginx.mark()
        made = worker_result(start_worker([*base, "--unary", "--inflight", "16", "--rate", str(rate), "--seconds", str(secs),
                                           "--due-in-ms", "1000"], logdir=logdir, name="na-paced"), timeout=secs + 60)  # fmt: skip
        wait_count(nginx, mark, made["done"], label="project paced", timeout=60)
        time.sleep(0.2)
        out["paced"] = stats(f"project paced ({made['done'] / (made['t1'] - made['t0']):,.0f}/s)", lateness(nginx, mark), made["done"])
    finally:
        proj.stop()
    return out


def beanstalkd_runs(nginx: Nginx, logdir: Path, sizes: dict) -> dict:
    wait_quiet()
    bs = Beanstalkd(logdir).start()
    cons = start_worker(["bs-consume", "--port", str(bs.port), "--concurrency", "32"], logdir=logdir, name="bs-consumer")
    base = ["bs-produce", "--port", str(bs.port), "--url", nginx.url(), "--due-header"]
    out = {}
    try:
        mark = nginx.mark()
        worker_result(start_worker([*base, "--n", "500"], logdir=logdir, name="bs-warm"))
        wait_count(nginx, mark, 500, label="warm-up", timeout=60, watch=[cons])
        n = sizes["n"]
        trials = []
        for scen, extra in [("spread", ["--rate", str(n)])] * sizes["trials"] + [("burst", [])]:
            mark = nginx.mark()
            worker_result(start_worker([*base, "--n", str(n), "--delay", "2", *extra], logdir=logdir, name=f"bs-{scen}"))
            wait_count(nginx, mark, n, label=f"beanstalkd {scen}", timeout=60, watch=[cons])
            time.sleep(0.2)
            out[scen] = stats(f"beanstalkd {scen}", lateness(nginx, mark), n)
            if scen == "spread":
                trials.append(out[scen])
        out["spread"] = median_trial(trials)
        rate, secs = sizes["rate"], sizes["seconds"]
        mark = nginx.mark()
        made = worker_result(start_worker([*base, "--rate", str(rate), "--seconds", str(secs), "--delay", "1"],
                                          logdir=logdir, name="bs-paced"), timeout=secs + 60)  # fmt: skip
        wait_count(nginx, mark, made["done"], label="beanstalkd paced", timeout=60, watch=[cons])
        time.sleep(0.2)
        out["paced"] = stats(f"beanstalkd paced ({made['done'] / (made['t1'] - made['t0']):,.0f}/s)", lateness(nginx, mark), made["done"])
    finally:
        cons.send_signal(signal.SIGTERM)
        worker_result(cons, timeout=30)
        bs.stop()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(ap)
    a = ap.parse_args(argv)
    setup_run(a.quick)
    sizes = {"n": 2000, "rate": 500, "seconds": 3 if a.quick else 10, "trials": 1 if a.quick else 3}
    logdir = run_dir("delay")
    nginx = Nginx(logdir).start()
    say(f"delay: nginx {nginx.url()}; logs in {logdir}")
    try:
        p = project_runs(nginx, logdir, sizes)
        b = beanstalkd_runs(nginx, logdir, sizes)
    finally:
        nginx.stop()
    early = sum(p[s]["early"] for s in p)
    complete = all(p[s]["n"] == p[s]["expected"] for s in p)
    m = [
        Metric("delay_spread_p99", p["spread"]["p99"], "ms", "beanstalkd_spread_p99", b["spread"]["p99"], "<= 5 ms, none early",
               p["spread"]["p99"] <= 5 and p["spread"]["early"] == 0, higher_is_better=False,
               note=f"2,000 due within one second, median of {sizes['trials']} trials (p99s: project {p['spread']['trials_p99']}, "
                    f"beanstalkd {b['spread']['trials_p99']}); lateness at the target (nginx $msec, 1 ms resolution)"),
        Metric("delay_spread_p50", p["spread"]["p50"], "ms", "beanstalkd_spread_p50", b["spread"]["p50"], higher_is_better=False),
        Metric("delay_spread_max", p["spread"]["max"], "ms", "beanstalkd_spread_max", b["spread"]["max"], higher_is_better=False),
        Metric("delay_burst_p99", p["burst"]["p99"], "ms", "beanstalkd_burst_p99", b["burst"]["p99"], higher_is_better=False,
               note="2,000 due at the same moment: p99 is mostly the time to send them all"),
        Metric("delay_burst_max", p["burst"]["max"], "ms", "beanstalkd_burst_max", b["burst"]["max"], higher_is_better=False),
        Metric("delay_paced_p99", p["paced"]["p99"], "ms", "beanstalkd_paced_p99", b["paced"]["p99"], higher_is_better=False,
               note=f"{sizes['rate']}/s for {sizes['seconds']} s, each due 1 s after it was sent"),
        Metric("delay_paced_max", p["paced"]["max"], "ms", "beanstalkd_paced_max", b["paced"]["max"], higher_is_better=False),
        Metric("delay_early", early, "notifies", "beanstalkd_early", sum(b[s]["early"] for s in b), "0", early == 0 and complete,
               higher_is_better=False, note="deliveries before their due time, all scenarios (and every notify arrived)"),
    ]  # fmt: skip
    finish("delay", m, m[0], quick=a.quick, argv=sys.argv[1:] if argv is None else argv, details={"project": p, "beanstalkd": b})


if __name__ == "__main__":
    main()
