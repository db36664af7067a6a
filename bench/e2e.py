#!/usr/bin/env python3
"""e2e: immediate notifies delivered per second to an nginx target.

Systems, one after the other, each against the same nginx (1 worker, logging
one line per request; deliveries are counted and timed from that log):

  project dev      `notifyagent dev` (all in one process), SQLite WAL synchronous=FULL (the default)
  project split    `notifyagent scheduler` + 2 x `notifyagent dispatcher`, same store settings
  project pg1      1 scheduler + 2 dispatchers on PostgreSQL (NOTIFY_BENCH_POSTGRES, default
                   postgresql://postgres@127.0.0.1:5432/test; a fresh schema per run)
  project pg2      2 schedulers sharing that PostgreSQL + 2 dispatchers streaming from both; the
                   producer's load is split over the two schedulers. Both PostgreSQL rows also
                   report what the database wrote per notify (transactions, rows, WAL bytes)
  beanstalkd       beanstalkd -b (binlog, its default fsync: at most every 50 ms); a producer
                   process putting jobs (greenstalk, one put at a time) and one asyncio consumer
                   process with C connections, each reserve -> POST -> delete (the original
                   NotifyAgent's design); also with 2 consumer processes, and with -f0 (fsync every put)
  bare aiohttp     N POSTs from a pooled aiohttp session, C in flight, 1 and 2 processes (and uvloop)

The project's producer is a separate process calling BatchCreateNotify (100 per
call, 4 calls in flight) as fast as the scheduler accepts. Throughput = N / (time
of the last arrival at nginx - time the producer started). Each system gets a
warm-up of its own before the measured run.

With --before GIT_REV the project's systems are measured twice, the build of GIT_REV
(cached in ~/.cache/notifyagent-bench/) and then the current checkout, system by system, beside
the same baselines (run once); each process's CPU µs per notify of both builds is
recorded, and the scheduler's ratio current/before is a target (issue 11: <= 0.5).

An fsync audit runs each durable system under `strace -f -c` on a small load and
reports the fsync/fdatasync calls per 1,000 notifies.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import uuid
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    Beanstalkd, Build, Metric, Nginx, Project, Traced, build_args, builds, common_args, cpu_seconds, finish, fmt, get_status, notifyagent_cmd,
    free_port, py_spy, run_dir, say, setup_run, start_worker, wait_count, wait_grpc_ready, wait_port, wait_quiet,
    worker_result, workdir,
)

CONCURRENCY = 128  # bare aiohttp loop: HTTP calls in flight (the project's dispatcher capacity is 256)
BS_CONCURRENCY = 32  # beanstalkd consumer connections per process: its best setting here (8-128 tried)


PG_DSN = os.environ.get("NOTIFY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
_PG_STATS = ("SELECT xact_commit, tup_inserted + tup_updated + tup_deleted, pg_current_wal_lsn() - '0/0'::pg_lsn"
             " FROM pg_stat_database WHERE datname = current_database()")


def psql(sql: str) -> list[str]:
    out = subprocess.run(["psql", PG_DSN, "-XAtc", sql], capture_output=True, text=True, check=True).stdout
    return out.strip().split("|")


def pg_project(logdir: Path, mode: str) -> Project:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    psql(f'CREATE SCHEMA "{schema}"')
    store = f"{PG_DSN}{'&' if '?' in PG_DSN else '?'}search_path={schema}"
    return Project(logdir, mode="multi", schedulers=2 if mode == "pg2" else 1, store=store)


def run_load(load: list[str], addrs: list[str], n: int, logdir: Path, name: str):
    """One producer per scheduler, n split evenly; returns the workers (started)."""
    return [start_worker([*load, "--addr", a, "--n", str(n // len(addrs) + (1 if i < n % len(addrs) else 0))],
                         logdir=logdir, name=f"{name}{i}") for i, a in enumerate(addrs)]  # fmt: skip


def measure_project(nginx: Nginx, logdir: Path, mode: str, n: int, warm: int, profile: bool, build: Build | None = None) -> dict:
    """One system of the project; build (default: the current checkout) says which build runs it."""
    if build is not None:
        with build.active():
            return _measure_project(nginx, logdir, mode, n, warm, profile, f"{mode} ({build.label})",
                                    "-before" if build.name == "before" else "")  # fmt: skip
    return _measure_project(nginx, logdir, mode, n, warm, profile, mode, "")


def _measure_project(nginx: Nginx, logdir: Path, mode: str, n: int, warm: int, profile: bool, what: str, tag: str) -> dict:
    busy = wait_quiet()
    proj = (pg_project(logdir, mode) if mode in ("pg1", "pg2") else Project(logdir, mode=mode)).start()
    say(f"project {what} up on {proj.addrs} (pids {proj.pids()}), store {proj.store}")
    try:
        load = ["na-load", "--url", nginx.url(), "--batch", "100", "--inflight", "4"]
        mark = nginx.mark()
        for w in run_load(load, proj.addrs, warm, logdir, f"warm-{mode}{tag}"):
            worker_result(w)
        wait_count(nginx, mark, warm, label=f"{what} warm-up", timeout=120)
        time.sleep(0.5)
        cpu0 = {k: cpu_seconds(pid) for k, pid in proj.pids().items()}
        mark = nginx.mark()
        spies = []
        if profile:
            for role, pid in proj.pids().items():
                spies.append(py_spy(pid, f"e2e-{mode}{tag}-{role}", seconds=min(20, max(5, n / 4000))))
        pg0 = [float(x) for x in psql(_PG_STATS)] if proj.mode == "multi" else None
        prods = run_load(load, proj.addrs, n, logdir, f"producer-{mode}{tag}")
        got = wait_count(nginx, mark, n, label=f"{what} delivered", timeout=60 + n / 300, watch=prods,
                         extra=lambda: "")  # fmt: skip
        results = [worker_result(p) for p in prods]
        made = {"t0": min(r["t0"] for r in results), "t1": max(r["t1"] for r in results), "done": sum(r["done"] for r in results)}
        lines = nginx.lines_since(mark)
        t_last = max(t for t, _, _ in lines)
        # every result committed: sent_ok counts the warm-up too
        t_wait = time.monotonic()
        while time.monotonic() - t_wait < 60:
            st = get_status(proj.addr)
            if st.sent_ok >= warm + n:
                break
            time.sleep(0.05)
        t_committed = time.time()
        pg = None
        if pg0 is not None:
            pg1 = [float(x) for x in psql(_PG_STATS)]
            pg = {"transactions_per_notify": (pg1[0] - pg0[0]) / n, "rows_written_per_notify": (pg1[1] - pg0[1]) / n,
                  "wal_bytes_per_notify": (pg1[2] - pg0[2]) / n}  # fmt: skip
            say(f"project {what}: PostgreSQL per notify: {pg['transactions_per_notify']:.2f} transactions,"
                f" {pg['rows_written_per_notify']:.2f} rows written, {pg['wal_bytes_per_notify']:,.0f} WAL bytes")
        cpu = {k: cpu_seconds(pid) - cpu0[k] for k, pid in proj.pids().items()}
        for s in spies:
            if s is not None:
                s.wait(60)
        rate = got / (t_last - made["t0"])
        say(f"project {what}: {got:,} delivered in {t_last - made['t0']:.2f} s = {rate:,.0f}/s "
            f"(created at {made['done'] / (made['t1'] - made['t0']):,.0f}/s; cpu s {({k: round(v, 1) for k, v in cpu.items()})})")  # fmt: skip
        return {"rate": rate, "busy_before": busy, "delivered": got, "seconds": t_last - made["t0"], "create_rate": made["done"] / (made["t1"] - made["t0"]),
                "all_committed_s": t_committed - made["t0"], "sent_ok": st.sent_ok, "sent_failed": st.sent_failed,
                "cpu_s": cpu, "cpu_us_per_notify": sum(cpu.values()) / max(1, got) * 1e6, "postgres": pg,
                "cpu_us_per_notify_by_process": {k: v / max(1, got) * 1e6 for k, v in cpu.items()}}  # fmt: skip
    finally:
        proj.stop()
        if proj.mode == "multi":
            psql(f'DROP SCHEMA IF EXISTS "{proj.store.rsplit("search_path=", 1)[1]}" CASCADE')


def measure_beanstalkd(nginx: Nginx, logdir: Path, n: int, warm: int, *, fsync=None, consumers: int = 1, uvloop: bool = False) -> dict:
    busy = wait_quiet()
    bs = Beanstalkd(logdir, fsync=fsync).start()
    label = f"beanstalkd ({bs.mode}, {consumers} consumer process{'es' if consumers > 1 else ''}{', uvloop' if uvloop else ''})"
    say(f"{label} on port {bs.port}")
    cons = [start_worker(["bs-consume", "--port", str(bs.port), "--concurrency", str(BS_CONCURRENCY)] + (["--uvloop"] if uvloop else []),
                         logdir=logdir, name=f"bs-consumer{i}") for i in range(consumers)]  # fmt: skip
    try:
        mark = nginx.mark()
        worker_result(start_worker(["bs-produce", "--port", str(bs.port), "--url", nginx.url(), "--n", str(warm)],
                                   logdir=logdir, name="bs-warm"))  # fmt: skip
        wait_count(nginx, mark, warm, label="beanstalkd warm-up", timeout=120, watch=cons)
        time.sleep(0.5)
        pids = {"beanstalkd": bs.proc.pid, **{f"consumer{i}": c.pid for i, c in enumerate(cons)}}
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        mark = nginx.mark()
        prod = start_worker(["bs-produce", "--port", str(bs.port), "--url", nginx.url(), "--n", str(n)],
                            logdir=logdir, name="bs-producer")  # fmt: skip
        got = wait_count(nginx, mark, n, label="beanstalkd delivered", timeout=60 + n / 300, watch=[prod, *cons])
        made = worker_result(prod)
        lines = nginx.lines_since(mark)
        t_last = max(t for t, _, _ in lines)
        cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
        rate = got / (t_last - made["t0"])
        say(f"{label}: {got:,} delivered in {t_last - made['t0']:.2f} s = {rate:,.0f}/s "
            f"(put at {made['done'] / (made['t1'] - made['t0']):,.0f}/s)")  # fmt: skip
        return {"rate": rate, "busy_before": busy, "delivered": got, "seconds": t_last - made["t0"], "mode": bs.mode, "consumers": consumers,
                "put_rate": made["done"] / (made["t1"] - made["t0"]), "cpu_s": cpu,
                "cpu_us_per_notify": sum(cpu.values()) / max(1, got) * 1e6}  # fmt: skip
    finally:
        for c in cons:
            c.send_signal(signal.SIGTERM)
        for c in cons:
            try:
                worker_result(c, timeout=30)
            except Exception as e:
                say(f"consumer: {e}")
        bs.stop()


def measure_bare(nginx: Nginx, logdir: Path, n: int, *, procs: int, uvloop: bool) -> dict:
    label = f"bare aiohttp ({procs} process{'es' if procs > 1 else ''}{', uvloop' if uvloop else ''})"
    args = ["bare", "--url", nginx.url(), "--concurrency", str(CONCURRENCY // procs)] + (["--uvloop"] if uvloop else [])
    busy = wait_quiet()
    worker_result(start_worker([*args, "--n", "2000"], logdir=logdir, name="bare-warm"))  # warm-up
    mark = nginx.mark()
    ws = [start_worker([*args, "--n", str(n // procs)], logdir=logdir, name=f"bare{i}") for i in range(procs)]
    got = wait_count(nginx, mark, n // procs * procs, label=label, timeout=60 + n / 500, watch=ws)
    outs = [worker_result(w) for w in ws]
    t0 = min(o["t0"] for o in outs)
    t_last = max(t for t, _, _ in nginx.lines_since(mark))
    rate = got / (t_last - t0)
    say(f"{label}: {got:,} in {t_last - t0:.2f} s = {rate:,.0f}/s")
    return {"rate": rate, "busy_before": busy, "delivered": got, "seconds": t_last - t0}


# --- fsync audit -------------------------------------------------------------------


def fsync_audit(nginx: Nginx, logdir: Path, n: int) -> dict:
    """Counts the sync calls of each durable system for n notifies (strace -f -c, from process start)."""
    if not shutil.which("strace"):
        say("strace missing (apt-get install strace): no fsync audit")
        return {}
    out: dict = {}
    d = workdir("audit")
    port = free_port()
    addr = f"127.0.0.1:{port}"
    t = Traced("audit-notifyagent", [*notifyagent_cmd(), "dev", "--grpc-addr", addr, "--store", f"sqlite:///{d / 'notifyagent.db'}",
               "--allow-networks", "127.0.0.0/8", "--http-addr", "", "--log-level", "WARNING"], logdir=logdir)  # fmt: skip
    try:
        wait_grpc_ready(addr, timeout=60, proc=t.proc)
        time.sleep(0.5)
        mark = nginx.mark()
        made = worker_result(start_worker(["na-load", "--addr", addr, "--url", nginx.url(), "--batch", "100",
                                           "--inflight", "4", "--n", str(n)], logdir=logdir, name="audit-producer"))  # fmt: skip
        wait_count(nginx, mark, n, label="fsync audit (project dev)", timeout=120)
        while get_status(addr).sent_ok < n:
            time.sleep(0.05)
    finally:
        c = t.stop()
    out["project"] = {"notifies": made["done"], "calls": c, "per_1000": 1000 * sum(c.values()) / max(1, made["done"])}
    say(f"fsync audit, project dev: {c} for {made['done']:,} notifies (startup and shutdown included)")
    for fsync in (None, 0):
        bs = Beanstalkd(logdir, fsync=fsync)
        (bs.dir / "binlog").mkdir(exist_ok=True)
        t = Traced("audit-beanstalkd", bs.argv(), logdir=logdir)
        wait_port(bs.port, proc=t.proc)
        cons = start_worker(["bs-consume", "--port", str(bs.port), "--concurrency", str(BS_CONCURRENCY)], logdir=logdir,
                            name="audit-consumer")
        try:
            mark = nginx.mark()
            worker_result(start_worker(["bs-produce", "--port", str(bs.port), "--url", nginx.url(), "--n", str(n)],
                                       logdir=logdir, name="audit-bs-producer"))  # fmt: skip
            wait_count(nginx, mark, n, label=f"fsync audit (beanstalkd, {bs.mode})", timeout=120)
            time.sleep(0.3)
        finally:
            cons.send_signal(signal.SIGTERM)
            worker_result(cons, timeout=30)
            c = t.stop()
        key = "beanstalkd_f0" if fsync == 0 else "beanstalkd"
        out[key] = {"mode": bs.mode, "notifies": n, "calls": c, "per_1000": 1000 * sum(c.values()) / n}
        say(f"fsync audit, beanstalkd ({bs.mode}): {c} for {n:,} jobs")
    return out


def pg_metric(r: dict) -> Metric:
    """The multi-scheduler row (issue 11: 2 schedulers >= 1.6 x 1 scheduler, both with 2 dispatchers on one PostgreSQL)."""
    one, two = r["project_pg1"]["rate"], r["project_pg2"]["rate"]
    return Metric("e2e_pg_2schedulers", two, "notifies/s", "e2e_pg_1scheduler", one, ">= 1.6", two >= 1.6 * one,
                  note="2 schedulers + 2 dispatchers vs 1 scheduler + 2 dispatchers, both on one PostgreSQL")


# the process whose CPU per notify issue 11 halves, per system
SCHEDULER_OF = {"project_dev": "dev", "project_split": "scheduler", "project_pg1": "scheduler"}


def before_metrics(r: dict, rb: dict) -> list[Metric]:
    """With --before: each system's rate beside the before build's, and the scheduler's CPU µs per notify,
    current / before, with the target <= 0.5 for split and dev (issue 11: halved)."""
    if not rb:
        return []
    base = f"before_{rb['git']}"
    out = []
    for key in ("project_dev", "project_split", "project_pg1", "project_pg2"):
        if key in r and key in rb:
            name = "e2e_" + key.removeprefix("project_")
            out.append(Metric(name, r[key]["rate"], "notifies/s", base, rb[key]["rate"],
                              note=f"the same system built at git {rb['git']}, measured in this run (information)"))  # fmt: skip
    for key, proc in SCHEDULER_OF.items():
        if key in r and key in rb:
            cur = r[key]["cpu_us_per_notify_by_process"].get(proc)
            old = rb[key].get("cpu_us_per_notify_by_process", {}).get(proc)
            if cur is None or not old:
                continue
            target = key in ("project_dev", "project_split")
            name = f"e2e_{key.removeprefix('project_')}{'' if proc == 'dev' else '_' + proc}_cpu"
            out.append(Metric(name, cur, "µs/notify", f"{base}_{proc}_cpu", old,
                              "<= 0.5" if target else "", (cur <= 0.5 * old) if target else None, higher_is_better=False,
                              note=f"CPU µs per notify of the {proc} process, current / before (issue 11: halved)"))  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(ap)
    ap.add_argument("--n", type=int, default=0, help="notifies per measured run (default 100,000; 5,000 with --quick)")
    ap.add_argument("--postgres-only", action="store_true", help="only the PostgreSQL rows (1 and 2 schedulers)")
    build_args(ap)
    a = ap.parse_args(argv)
    setup_run(a.quick)
    bs_ = builds(a.before)
    before = bs_[0] if a.before else None
    n = a.n or (5_000 if a.quick else 100_000)
    warm = 1_000 if a.quick else 3_000
    logdir = run_dir("e2e")
    say(f"e2e: {n:,} immediate notifies per system; logs in {logdir}")
    nginx = Nginx(logdir).start()
    say(f"nginx {nginx.url()} (1 worker)")
    r: dict = {}
    rb: dict = {"git": before.git} if before else {}  # the before build's systems, same keys as r

    def project(mode: str) -> None:
        """One system of the project: with --before, the before build first, then the current checkout."""
        if before:
            rb[f"project_{mode}"] = measure_project(nginx, logdir, mode, n, warm, a.profile, before)
        r[f"project_{mode}"] = measure_project(nginx, logdir, mode, n, warm, a.profile, bs_[-1] if before else None)

    if a.postgres_only:
        try:
            project("pg1")
            project("pg2")
        finally:
            nginx.stop()
        if before:
            r["before"] = rb
        m = [pg_metric(r), *before_metrics(r, rb)]
        for k, v in [*r.items(), *((f"{k} (before)", v) for k, v in rb.items() if isinstance(v, dict))]:
            if isinstance(v, dict) and "rate" in v:
                say(f"  {k:<16} {fmt(v['rate']):>8} /s  PostgreSQL per notify: {v['postgres']}")
        finish("e2e", m, m[0], quick=a.quick, argv=sys.argv[1:] if argv is None else argv, details=r)
        return
    try:
        project("dev")
        project("split")
        if shutil.which("psql"):  # the PostgreSQL rows: one scheduler, then two sharing the store
            project("pg1")
            project("pg2")
        else:
            say("psql missing: no PostgreSQL rows (e2e_pg_1scheduler, e2e_pg_2schedulers)")
        r["beanstalkd"] = measure_beanstalkd(nginx, logdir, n, warm)
        r["beanstalkd_2c"] = measure_beanstalkd(nginx, logdir, n, warm, consumers=2)
        if not a.quick:
            r["beanstalkd_f0"] = measure_beanstalkd(nginx, logdir, max(5_000, n // 4), warm, fsync=0)
            r["beanstalkd_uvloop"] = measure_beanstalkd(nginx, logdir, n, warm, uvloop=True)
        r["bare_1p"] = measure_bare(nginx, logdir, n, procs=1, uvloop=False)
        r["bare_2p"] = measure_bare(nginx, logdir, n, procs=2, uvloop=False)
        if not a.quick:
            r["bare_1p_uvloop"] = measure_bare(nginx, logdir, n, procs=1, uvloop=True)
            r["bare_2p_uvloop"] = measure_bare(nginx, logdir, n, procs=2, uvloop=True)
        r["fsync_audit"] = fsync_audit(nginx, logdir, 2_000 if a.quick else 10_000)
    finally:
        nginx.stop()

    dev, split = r["project_dev"]["rate"], r["project_split"]["rate"]
    m = [
        Metric("e2e_dev", dev, "notifies/s", "beanstalkd_pipeline", r["beanstalkd"]["rate"], ">= 1.0", dev >= r["beanstalkd"]["rate"],
               note="notifyagent dev (1 process), fsync per group commit; beanstalkd -b default fsync (<= every 50 ms), 1 consumer process"),
        Metric("e2e_dev", dev, "notifies/s", "bare_aiohttp_1proc", r["bare_1p"]["rate"], ">= 0.6", dev >= 0.6 * r["bare_1p"]["rate"],
               note="bare aiohttp loop, 1 process, asyncio, 128 in flight"),
        Metric("e2e_split", split, "notifies/s", "beanstalkd_pipeline_2consumers", r["beanstalkd_2c"]["rate"], ">= 1.0",
               split >= r["beanstalkd_2c"]["rate"], note="1 scheduler + 2 dispatcher processes vs beanstalkd with 2 consumer processes"),
        Metric("e2e_split", split, "notifies/s", "bare_aiohttp_2proc", r["bare_2p"]["rate"], ">= 0.6", split >= 0.6 * r["bare_2p"]["rate"],
               note="bare aiohttp loop, 2 processes"),
    ]  # fmt: skip
    if "beanstalkd_f0" in r:
        m.append(Metric("e2e_dev", dev, "notifies/s", "beanstalkd_pipeline_fsync_every_put", r["beanstalkd_f0"]["rate"],
                        note="beanstalkd -f0: fsync after every put (information)"))  # fmt: skip
    if "beanstalkd_uvloop" in r:
        m.append(Metric("e2e_dev", dev, "notifies/s", "beanstalkd_pipeline_uvloop", r["beanstalkd_uvloop"]["rate"],
                        note="beanstalkd consumer on uvloop (information)"))  # fmt: skip
    if "project_pg2" in r:
        m.append(pg_metric(r))
    if "bare_1p_uvloop" in r:
        m.append(Metric("e2e_dev", dev, "notifies/s", "bare_aiohttp_1proc_uvloop", r["bare_1p_uvloop"]["rate"], note="information"))
        m.append(Metric("e2e_split", split, "notifies/s", "bare_aiohttp_2proc_uvloop", r["bare_2p_uvloop"]["rate"], note="information"))
    m += before_metrics(r, rb)
    if before:
        r["before"] = rb
    for k, v in [*r.items(), *((f"{k} (before)", v) for k, v in rb.items())]:
        if isinstance(v, dict) and "rate" in v:
            say(f"  {k:<16} {fmt(v['rate']):>8} /s")
    finish("e2e", m, m[0], quick=a.quick, argv=sys.argv[1:] if argv is None else argv, details=r)


if __name__ == "__main__":
    main()
