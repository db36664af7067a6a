#!/usr/bin/env python3
"""Writes docs/benchmarks.md and docs/benchmarks.png from bench/out/results.json.

For each benchmark it takes the latest full run (or, failing that, the latest
--quick run, marked as such). Text between the `<!-- notes -->` and
`<!-- /notes -->` markers of an existing docs/benchmarks.md is kept: that is
where people write what the numbers mean.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, RESULTS, fmt  # noqa: E402

DOCS = REPO / "docs"
MD = DOCS / "benchmarks.md"
PNG = DOCS / "benchmarks.png"
BENCHES = ["e2e", "ingest", "delay", "burst", "pending"]
NOTES_START, NOTES_END = "<!-- notes -->", "<!-- /notes -->"


def latest_runs() -> dict[str, dict]:
    runs = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    out: dict[str, dict] = {}
    for bench in BENCHES:
        mine = [r for r in runs if r["bench"] == bench]
        full = [r for r in mine if not r["quick"]]
        if full or mine:
            out[bench] = (full or mine)[-1]
    return out


def met_text(m: dict) -> str:
    if m.get("met") is None:
        return ""
    return "**yes**" if m["met"] else "**no**"


def ratio_text(m: dict) -> str:
    return f"{m['ratio']:.2f}" if m.get("ratio") is not None else "-"


def table(runs: dict[str, dict]) -> list[str]:
    rows = ["| benchmark | metric | project | baseline | baseline value | ratio (project / baseline) | target | met? |",
            "| --- | --- | ---: | --- | ---: | ---: | --- | --- |"]  # fmt: skip
    for bench in BENCHES:
        run = runs.get(bench)
        if not run:
            rows.append(f"| {bench} | not run yet | | | | | | |")
            continue
        tag = " (quick)" if run["quick"] else ""
        for m in run["metrics"]:
            better = "" if m.get("higher_is_better", True) else " ↓"
            rows.append(f"| {bench}{tag} | {m['name']}{better} | {fmt(m['value'])} {m['unit']} | {m['baseline']} | "
                        f"{fmt(m['baseline_value'])} {m['unit']} | {ratio_text(m)} | {m['target']} | {met_text(m)} |")  # fmt: skip
    return rows


def machine(runs: dict[str, dict]) -> list[str]:
    if not runs:
        return ["(no results yet)"]
    latest = max(runs.values(), key=lambda r: r["time"])
    mi = latest["machine"]
    return [
        f"- {mi['nproc']} cores ({mi['cpu']}), {mi['mem_gib']} GiB memory, {mi['os']}, Linux {mi['kernel']}",
        f"- Python {mi['python']}; notifyagent {mi['notifyagent']} (git {mi.get('git', '-')}); grpcio {mi['grpcio']}; protobuf {mi['protobuf']}; "
        f"aiohttp {mi['aiohttp']}; uvloop {mi['uvloop']}; greenstalk {mi['greenstalk']}",
        f"- SQLite {mi['sqlite']} (Python's sqlite3); beanstalkd {mi['beanstalkd']}; nginx {mi['nginx']} (Debian packages)",
    ]


def details(runs: dict[str, dict]) -> list[str]:
    out: list[str] = []
    e2e = runs.get("e2e")
    if e2e:
        d = e2e["details"]
        out += ["### e2e: every system measured", "", "| system | delivered/s | CPU µs per notify (all its processes) |", "| --- | ---: | ---: |"]
        names = {"project_dev": "notifyagent dev (1 process)", "project_split": "notifyagent scheduler + 2 dispatchers",
                 "project_pg1": "notifyagent scheduler + 2 dispatchers, PostgreSQL",
                 "project_pg2": "notifyagent 2 schedulers + 2 dispatchers, PostgreSQL",
                 "beanstalkd": "beanstalkd + 1 consumer process", "beanstalkd_2c": "beanstalkd + 2 consumer processes",
                 "beanstalkd_f0": "beanstalkd -f0 (fsync every write) + 1 consumer", "beanstalkd_uvloop": "beanstalkd + 1 consumer on uvloop",
                 "bare_1p": "bare aiohttp, 1 process", "bare_2p": "bare aiohttp, 2 processes",
                 "bare_1p_uvloop": "bare aiohttp, 1 process, uvloop", "bare_2p_uvloop": "bare aiohttp, 2 processes, uvloop"}  # fmt: skip
        before = d.get("before") or {}
        for k, label in names.items():
            for v, what in ((before.get(k), f" — before (git {before.get('git')})"), (d.get(k), " — current" if k in before else "")):
                if v:
                    cpu = v.get("cpu_us_per_notify")
                    out.append(f"| {label}{what} | {fmt(v['rate'])} | {fmt(cpu) if cpu else '-'} |")
        out += e2e_cpu_by_process(d, e2e["machine"].get("git", "-"))
        fa = d.get("fsync_audit") or {}
        if fa:
            out += ["", "fsync audit (`strace -f -c`, whole process life, small load):", ""]
            for k, v in fa.items():
                calls = ", ".join(f"{c} {name}" for name, c in v["calls"].items()) or "none"
                what = "jobs" if k.startswith("beanstalkd") else "notifies"
                out.append(f"- {k}{' (' + v['mode'] + ')' if 'mode' in v else ''}: {calls} for {v['notifies']:,} {what} "
                           f"= {v['per_1000']:.1f} per 1,000")  # fmt: skip
        out.append("")
    ing = runs.get("ingest")
    if ing:
        d = ing["details"]
        out += ["### ingest: every phase (median round; all rounds in notifies/s)", "",
                "| phase | notifies/s | calls/s | call latency p50 / p99 ms | scheduler CPU µs per notify | rounds |",
                "| --- | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
        before = d.get("before") or {}
        for k, v in [(k, d.get(k)) for k in ("echo_unary", "echo_batch")] + [
                x for k in ("project_unary", "project_batch")
                for x in ((f"{k} (before, git {before.get('git')})", before.get(k)), (k + (" (current)" if k in before else ""), d.get(k)))]:
            if v:
                out.append(f"| {k} | {fmt(v['rate'])} | {fmt(v['calls_rate'])} | {fmt(v['lat_ms']['p50'])} / {fmt(v['lat_ms']['p99'])} | "
                           f"{fmt(v.get('cpu_us_per_notify')) if v.get('cpu_us_per_notify') else '-'} | "
                           f"{', '.join(fmt(x) for x in v.get('rounds', []))} |")  # fmt: skip
        for k in ("bs_put_greenstalk", "bs_put_async", "bs_put_async_f0"):
            if k in d:
                out.append(f"| {k} ({d[k]['mode']}) | {fmt(d[k]['rate'])} | | | | |")
        out.append("")
    dl = runs.get("delay")
    if dl:
        d = dl["details"]
        out += ["### delay: lateness in ms at the target", "", "| scenario | system | arrived | p50 | p99 | max | min | early |",
                "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for scen in ("spread", "burst", "paced"):
            for sysname in ("project", "beanstalkd"):
                v = d[sysname].get(scen)
                if v:
                    trials = f" (trials' p99: {', '.join(fmt(x) for x in v['trials_p99'])})" if v.get("trials_p99") else ""
                    out.append(f"| {scen} | {sysname} | {v['n']:,}/{v['expected']:,} | {fmt(v['p50'])} | {fmt(v['p99'])}{trials} | "
                               f"{fmt(v['max'])} | {fmt(v['min'])} | {v['early']} |")  # fmt: skip
        out.append("")
    bu = runs.get("burst")
    if bu:
        d = bu["details"]
        out += ["### burst: 2,000 due in one millisecond, lateness in ms at the target", "",
                "| system | arrived | p50 | p99 (each trial's) | max | min | early |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        names = {"project_split": "project: 1 scheduler + 2 dispatchers", "beanstalkd_2consumers": "beanstalkd + 2 consumer processes",
                 "project_dev": "project: `notifyagent dev`", "beanstalkd_1consumer": "beanstalkd + 1 consumer process"}  # fmt: skip
        before = d.get("before") or {}
        rows = []
        for key, label in names.items():
            if key in before:
                rows.append((f"{label} (before, git {before['git']})", before[key]))
            rows.append((label + (" (current)" if key in before else ""), d.get(key)))
        for label, v in rows:
            if v:
                out.append(f"| {label} | {v['n']:,}/{v['expected']:,} | {fmt(v['p50'])} | {fmt(v['p99'])} "
                           f"({', '.join(fmt(x) for x in v['trials_p99'])}) | {fmt(v['max'])} | {fmt(v['min'])} | {v['early']} |")  # fmt: skip
        out.append("")
    pe = runs.get("pending")
    if pe:
        p, b = pe["details"]["project"], pe["details"]["beanstalkd"]
        out += ["### pending", "",
                f"- project: {p['n']:,} created at {fmt(p['create_rate'])}/s; scheduler VmRSS {p['rss_kib'] / 1024:.1f} MiB "
                f"(empty {p['rss_empty_kib'] / 1024:.1f} MiB, peak {p['hwm_kib'] / 1024:.1f} MiB); timer wheel {p['wheel_size']:,}; "
                f"store {p['store_bytes'] / 2**20:.0f} MiB on disk",
                f"- project restart (`notifyagent dev` on that store): SERVING after {p['restart_ready_s']:.2f} s, the overdue probe "
                f"arrived {p['restart_first_due_s']:.2f} s after the spawn; RSS then {p['rss_after_restart_kib'] / 1024:.1f} MiB",
                f"- project: {p['m']:,} more due within the horizon (held in the timer wheel): "
                f"{p['in_memory_bytes_per_notify']:.0f} bytes of RSS each",
                f"- beanstalkd ({b['mode']}): {b['n']:,} put at {fmt(b['put_rate'])}/s; VmRSS {b['rss_kib'] / 1024:.1f} MiB "
                f"(empty {b['rss_empty_kib'] / 1024:.1f} MiB); binlog {b['binlog_bytes'] / 2**20:.0f} MiB",
                f"- beanstalkd restart: port open after {b['restart_ready_s']:.2f} s (it replays the binlog after that), the overdue probe arrived "
                f"{b['restart_first_due_s']:.2f} s after the spawn"]  # fmt: skip
        o = (pe["details"].get("before") or {}).get("project")
        if o:
            out.append(f"- project built at git {pe['details']['before']['git']} (before), same run: {o['n']:,} created at "
                       f"{fmt(o['create_rate'])}/s; scheduler VmRSS {o['rss_kib'] / 1024:.1f} MiB (peak {o['hwm_kib'] / 1024:.1f} MiB); "
                       f"{o['in_memory_bytes_per_notify']:.0f} bytes of RSS per notify in the timer wheel; overdue probe "
                       f"{o['restart_first_due_s']:.2f} s after the restart")  # fmt: skip
        out.append("")
    return out


def e2e_cpu_by_process(d: dict, git: str) -> list[str]:
    """With --before: CPU µs per notify of each process of both builds, and current / before (issue 11: the
    scheduler's <= 0.5, i.e. halved)."""
    before = d.get("before") or {}
    if not before:
        return []
    systems = {"project_dev": "dev", "project_split": "split (SQLite)", "project_pg1": "1 scheduler, PostgreSQL",
               "project_pg2": "2 schedulers, PostgreSQL"}  # fmt: skip
    out = ["", f"CPU µs per notify of each process, before (git {before['git']}) and current (git {git}), "
           "measured one after the other in this run:", "",
           "| system | process | before µs/notify | current µs/notify | current / before |", "| --- | --- | ---: | ---: | ---: |"]  # fmt: skip
    for key, label in systems.items():
        b, c = before.get(key), d.get(key)
        if not b or not c:
            continue
        bp, cp = b.get("cpu_us_per_notify_by_process") or {}, c.get("cpu_us_per_notify_by_process") or {}
        rows = [(k, bp.get(k), cp.get(k)) for k in dict.fromkeys([*bp, *cp])]
        if len(rows) > 1:
            rows.append(("all processes", b.get("cpu_us_per_notify"), c.get("cpu_us_per_notify")))
        for proc, bv, cv in rows:
            ratio = f"{cv / bv:.2f}" if bv and cv is not None else "-"
            strong = "**" if proc == "dev" or proc.startswith("scheduler") else ""
            out.append(f"| {label} | {proc} | {fmt(bv)} | {fmt(cv)} | {strong}{ratio}{strong} |")
    return out


def chart(runs: dict[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    colors = {"project": "#2b6cb0", "before": "#90cdf4", "baseline": "#a0aec0"}

    def bars(ax, labels, values, kinds, title, unit, log=False):
        ax.barh(range(len(values)), values, color=[colors[k] for k in kinds])
        ax.set_yticks(range(len(values)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(unit, fontsize=8)
        if log:
            ax.set_xscale("log")
        for i, v in enumerate(values):
            ax.text(v, i, f" {fmt(v)}", va="center", fontsize=7)

    e2e = runs.get("e2e")
    ax = axes[0][0]
    if e2e:
        d = e2e["details"]
        items = [("notifyagent dev", "project_dev", "project"), ("notifyagent 1 sched + 2 disp", "project_split", "project"),
                 ("beanstalkd + 1 consumer", "beanstalkd", "baseline"), ("beanstalkd + 2 consumers", "beanstalkd_2c", "baseline"),
                 ("beanstalkd -f0 + 1 consumer", "beanstalkd_f0", "baseline"), ("beanstalkd + 1 consumer, uvloop", "beanstalkd_uvloop", "baseline"),
                 ("bare aiohttp 1 proc", "bare_1p", "baseline"), ("bare aiohttp 2 procs", "bare_2p", "baseline"),
                 ("bare aiohttp 1 proc, uvloop", "bare_1p_uvloop", "baseline"), ("bare aiohttp 2 procs, uvloop", "bare_2p_uvloop", "baseline")]  # fmt: skip
        items = [i for i in items if i[1] in d]
        before = d.get("before") or {}
        rates = {k: v["rate"] for k, v in d.items() if isinstance(v, dict) and "rate" in v}
        for k in ("project_split", "project_dev"):  # the before build's bars just above the current ones
            if k in before and k in d:
                at = next(j for j, i in enumerate(items) if i[1] == k)
                label = next(i[0] for i in items if i[1] == k)
                items.insert(at, (f"{label} (before {before['git']})", f"before_{k}", "before"))
                rates[f"before_{k}"] = before[k]["rate"]
        bars(ax, [i[0] for i in items], [rates[i[1]] for i in items], [i[2] for i in items],
             "e2e: immediate notifies delivered per second" + (" (quick)" if e2e["quick"] else ""), "notifies/s")  # fmt: skip
    ing = runs.get("ingest")
    ax = axes[0][1]
    if ing:
        d = ing["details"]
        items = [("CreateNotify (unary)", "project_unary", "project"), ("gRPC echo unary", "echo_unary", "baseline"),
                 ("BatchCreateNotify ×1000", "project_batch", "project"), ("gRPC echo batch ×1000", "echo_batch", "baseline"),
                 ("beanstalkd put (greenstalk)", "bs_put_greenstalk", "baseline"), ("beanstalkd put (pipelined)", "bs_put_async", "baseline"),
                 ("beanstalkd put -f0 (pipelined)", "bs_put_async_f0", "baseline")]  # fmt: skip
        items = [i for i in items if i[1] in d]
        bars(ax, [i[0] for i in items], [d[i[1]]["rate"] for i in items], [i[2] for i in items],
             "ingest: notifies accepted per second (log scale)" + (" (quick)" if ing["quick"] else ""), "notifies/s", log=True)  # fmt: skip
    dl = runs.get("delay")
    ax = axes[1][0]
    if dl:
        d = dl["details"]
        labels, values, kinds = [], [], []
        for scen in ("spread", "paced", "burst"):
            for sysname, kind in (("project", "project"), ("beanstalkd", "baseline")):
                v = d[sysname].get(scen)
                if v:
                    for q in ("p50", "p99"):
                        labels.append(f"{scen} {q} {'notifyagent' if kind == 'project' else 'beanstalkd'}")
                        values.append(max(0.5, v[q]))
                        kinds.append(kind)
        bars(ax, labels, values, kinds, "delay: lateness at the target, ms (log scale; 0 shown as 0.5)" + (" (quick)" if dl["quick"] else ""),
             "ms", log=True)  # fmt: skip
    pe = runs.get("pending")
    ax = axes[1][1]
    if pe:
        p, b = pe["details"]["project"], pe["details"]["beanstalkd"]
        labels = [f"notifyagent scheduler RSS, {p['n']:,} pending", f"beanstalkd RSS, {b['n']:,} delayed jobs",
                  "notifyagent restart → first due sent (s ×100)", "beanstalkd restart → first due sent (s ×100)"]  # fmt: skip
        values = [p["rss_kib"] / 1024, b["rss_kib"] / 1024, p["restart_first_due_s"] * 100, b["restart_first_due_s"] * 100]
        bars(ax, labels, values, ["project", "baseline", "project", "baseline"],
             "pending: resident memory (MiB) and restart" + (" (quick)" if pe["quick"] else ""), "MiB  |  seconds × 100")  # fmt: skip
    fig.suptitle("NotifyAgent vs baselines on the same machine (blue: NotifyAgent, light blue: its before build, grey: baselines)",
                 fontsize=11)  # fmt: skip
    fig.tight_layout()
    DOCS.mkdir(exist_ok=True)
    fig.savefig(PNG, dpi=110)


def main() -> None:
    runs = latest_runs()
    notes = f"{NOTES_START}\n_(analysis goes here; `bench/run report` keeps this block)_\n{NOTES_END}"
    if MD.exists():
        text = MD.read_text()
        if NOTES_START in text and NOTES_END in text:
            notes = text[text.index(NOTES_START): text.index(NOTES_END) + len(NOTES_END)]
    commands = []
    for bench in BENCHES:
        if bench in runs:
            r = runs[bench]
            commands.append(f"{r['command']:<27} # the run above: {r['time']}, git {r['machine'].get('git', '-')}")
    lines = [
        "# Benchmarks",
        "",
        "<!-- generated by `bench/run report` from bench/out/results.json; edit only the notes block -->",
        "",
        "NotifyAgent against what people run today, measured in the same run on the same machine:",
        "beanstalkd with asyncio consumer processes (the original NotifyAgent design), a bare aiohttp",
        "client loop, and the gRPC echo ceiling. Everything talks to 127.0.0.1 only; the target is nginx",
        "(one worker, `return 200`), which logs the arrival time of every request.",
        "",
        "![benchmarks](benchmarks.png)",
        "",
        "## Results",
        "",
        *table(runs),
        "",
        "↓: lower is better. The ratio is always project / baseline.",
        "",
        "## Machine",
        "",
        *machine(runs),
        "",
        "## Rerun",
        "",
        "From the repository root, with the project installed (`pip install -e .`); `bench/run` installs what is",
        "missing (nginx, beanstalkd, strace, wrk from Debian; greenstalk, matplotlib, uvloop, py-spy from PyPI):",
        "",
        "```sh",
        "bench/run all --quick      # every benchmark, small sizes (< 1 minute each)",
        *commands,
        "bench/run report           # this page and the chart from bench/out/results.json",
        "bench/run e2e --profile    # also py-spy profiles of the project's processes in bench/out/profiles/",
        "bench/run profile-summary bench/out/profiles/e2e-dev-dev.txt",
        "bench/run stages           # BatchCreateNotify's handler, no network: CPU per notify, stage by stage",
        "```",
        "",
        "## Details",
        "",
        *details(runs),
        "## What the numbers mean",
        "",
        notes,
        "",
    ]
    DOCS.mkdir(exist_ok=True)
    MD.write_text("\n".join(lines))
    chart(runs)
    print(f"wrote {MD.relative_to(REPO)} and {PNG.relative_to(REPO)}")


if __name__ == "__main__":
    main()
