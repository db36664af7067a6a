#!/usr/bin/env python3
"""Top functions of py-spy raw profiles (collapsed stacks, `py-spy record --format raw`).

    bench/run profile-summary bench/out/profiles/e2e-dev-dev.txt [--top 30] [--thread NAME] [--under FUNC]

Prints, per file: samples by thread, the functions with the most samples where
they are on top of the stack (self) and anywhere in it (inclusive, counted once
per stack), and samples grouped by the project's own modules.
"""

from __future__ import annotations

import argparse
import collections
import re
import signal
from pathlib import Path


def parse(path: Path):
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        yield stack.split(";"), int(count)


def short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py:123)"; --threads adds "thread (0x...)" frames
    m = re.match(r"(.*) \((.*?):?(\d*)\)$", frame)
    if not m:
        return frame
    func, file, lineno = m.groups()
    parts = file.split("/")
    file = "/".join(parts[-2:]) if "site-packages" not in file else parts[-1] if len(parts) < 3 else "/".join(parts[-2:])
    return f"{func} ({file}{':' + lineno if lineno else ''})"


def func_only(frame: str) -> str:
    return re.sub(r":\d+\)$", ")", short(frame))


def main() -> None:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--thread", default="", help="only stacks whose thread frame contains this")
    ap.add_argument("--under", default="", help="only stacks that pass through a frame containing this")
    a = ap.parse_args()
    for path in a.files:
        threads: collections.Counter = collections.Counter()
        self_: collections.Counter = collections.Counter()
        self_line: collections.Counter = collections.Counter()
        incl: collections.Counter = collections.Counter()
        modules: collections.Counter = collections.Counter()
        total = 0
        for stack, n in parse(path):
            thread = stack[0] if stack and stack[0].startswith(("thread", "process")) else "-"
            if a.thread and a.thread not in thread:
                continue
            if a.under and not any(a.under in f for f in stack):
                continue
            frames = [f for f in stack if not f.startswith(("thread ", "process "))]
            total += n
            threads[thread] += n
            if frames:
                self_[func_only(frames[-1])] += n
                self_line[short(frames[-1])] += n
            for f in set(func_only(f) for f in frames):
                incl[f] += n
            mods = [re.search(r"\((?:.*/)?((?:scheduler|dispatcher|common|registry)/\w+\.py)", f) for f in frames]
            mods = [m.group(1) for m in mods if m]
            modules[mods[-1] if mods else "(outside the project)"] += n
        print(f"== {path} : {total} samples")
        print("-- by thread")
        for t, n in threads.most_common(8):
            print(f"{100 * n / total:6.1f}%  {t}")
        print("-- self (top of stack)")
        for f, n in self_.most_common(a.top):
            print(f"{100 * n / total:6.1f}%  {f}")
        print("-- self, by line")
        for f, n in self_line.most_common(a.top):
            print(f"{100 * n / total:6.1f}%  {f}")
        print("-- inclusive")
        for f, n in incl.most_common(a.top):
            print(f"{100 * n / total:6.1f}%  {f}")
        print("-- innermost project module on the stack")
        for f, n in modules.most_common(a.top):
            print(f"{100 * n / total:6.1f}%  {f}")
        print()


if __name__ == "__main__":
    main()
