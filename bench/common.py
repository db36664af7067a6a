"""Shared plumbing for the benchmarks: ports, processes, nginx, beanstalkd,
the project's processes, progress lines, the RESULT line and bench/out/results.json.

Everything listens on 127.0.0.1 only. Every process a benchmark starts is
stopped by its pid when the benchmark ends (also on Ctrl-C or an error).
"""

from __future__ import annotations

import atexit
import datetime as _dt
import fcntl
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
RESULTS = OUT / "results.json"
PY = sys.executable
T0 = time.monotonic()

# --- output ------------------------------------------------------------------


def say(msg: str) -> None:
    """A progress line: seconds since the benchmark started, then the message."""
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


class Progress:
    """Prints `label: done/total (rate/s)` at most every `every` seconds."""

    def __init__(self, label: str, total: int | None = None, every: float = 2.0) -> None:
        self.label, self.total, self.every = label, total, every
        self.start = time.monotonic()
        self.last_print = self.start
        self.last_done = 0

    def update(self, done: int, extra: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_print < self.every:
            return
        rate = (done - self.last_done) / max(1e-9, now - self.last_print)
        of = f"/{self.total:,}" if self.total else ""
        say(f"{self.label}: {done:,}{of} ({rate:,.0f}/s){' ' + extra if extra else ''}")
        self.last_print, self.last_done = now, done


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def result_line(name: str, value: float, unit: str, baseline_value: float | None, baseline: str, *, tag: str = "RESULT") -> str:
    ratio = (value / baseline_value) if baseline_value else float("nan")
    line = f"{tag} {name} {value:.6g} {unit} ratio={ratio:.3f} baseline={baseline}"
    print(line, flush=True)
    return line


# --- results file ------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """Versions and hardware, recorded with every result."""
    import importlib.metadata as md
    import sqlite3

    def ver(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "-"

    def cmd(argv: list[str], pattern: str) -> str:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "-"
        m = re.search(pattern, p.stdout + p.stderr)
        return m.group(1) if m else "-"

    cpu = "-"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "services"], capture_output=True, text=True).stdout
    if dirty.strip():
        git += f" + uncommitted changes in services/ ({len(dirty.splitlines())} files)"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "notifyagent": ver("notifyagent"),
        "git": git or "-",
        "grpcio": ver("grpcio"),
        "protobuf": ver("protobuf"),
        "aiohttp": ver("aiohttp"),
        "uvloop": ver("uvloop"),
        "greenstalk": ver("greenstalk"),
        "sqlite": sqlite3.sqlite_version,
        "beanstalkd": cmd(["beanstalkd", "-v"], r"beanstalkd ([\w.+-]+)"),
        "nginx": cmd(["nginx", "-v"], r"nginx/([\w.+-]+)"),
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


@dataclass
class Metric:
    """One row of the results table."""

    name: str
    value: float
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    target: str = ""  # e.g. ">= 1.0 x beanstalkd_pipeline" or "<= 5 ms"
    met: bool | None = None
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline_value if self.baseline_value else None


def save_results(bench: str, metrics: list[Metric], *, quick: bool, argv: list[str], details: dict[str, Any]) -> None:
    """Appends one run to bench/out/results.json (a list of runs)."""
    OUT.mkdir(parents=True, exist_ok=True)
    runs = []
    if RESULTS.exists():
        try:
            runs = json.loads(RESULTS.read_text())
        except json.JSONDecodeError:
            RESULTS.rename(RESULTS.with_suffix(".corrupt.json"))
    runs.append({
        "bench": bench,
        "busy_before": list(BUSY_SEEN),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "command": "bench/run " + " ".join([bench, *argv]),
        "machine": machine_info(),
        "metrics": [{**m.__dict__, "ratio": m.ratio} for m in metrics],
        "details": details,
    })  # fmt: skip
    RESULTS.write_text(json.dumps(runs, indent=1))
    say(f"results appended to {RESULTS.relative_to(REPO)}")


def finish(bench: str, metrics: list[Metric], headline: Metric, *, quick: bool, argv: list[str], details: dict[str, Any]) -> None:
    """Saves the run, prints a METRIC line per secondary metric and ends with the RESULT line."""
    save_results(bench, metrics, quick=quick, argv=argv, details=details)
    for m in metrics:
        if m is not headline:
            result_line(m.name, m.value, m.unit, m.baseline_value, m.baseline or "-", tag="METRIC")
    result_line(headline.name, headline.value, headline.unit, headline.baseline_value, headline.baseline or "-")


# --- ports and processes -----------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


_procs: list[subprocess.Popen] = []


_workdirs: list[Path] = []


def workdir(name: str) -> Path:
    """A fresh directory on the real disk (fsync means something there; /tmp may be tmpfs).

    Removed when the benchmark ends (stores and binlogs reach gigabytes); BENCH_KEEP=1 keeps them."""
    base = OUT / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    _workdirs.append(d)
    return d


def spawn(name: str, argv: list[str], *, logdir: Path, env: dict[str, str] | None = None, stdout=None) -> subprocess.Popen:
    logdir.mkdir(parents=True, exist_ok=True)
    log = open(logdir / f"{name}.log", "ab")
    p = subprocess.Popen(
        argv, stdout=stdout if stdout is not None else log, stderr=log, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})}, cwd=str(REPO),
    )  # fmt: skip
    p.bench_name = name  # type: ignore[attr-defined]
    p.bench_log = logdir / f"{name}.log"  # type: ignore[attr-defined]
    _procs.append(p)
    return p


def stop(p: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
    """Stops one process we started, by its pid: sig, then SIGKILL after timeout."""
    if p is None:
        return None
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
    if p in _procs:
        _procs.remove(p)
    return p.returncode


def _stop_all() -> None:
    for p in list(_procs):
        if p.poll() is None:
            try:
                p.kill()
                p.wait(5)
            except Exception:
                pass
    _procs.clear()


def _at_exit() -> None:
    _stop_all()
    if not os.environ.get("BENCH_KEEP"):
        for d in _workdirs:
            shutil.rmtree(d, ignore_errors=True)


atexit.register(_at_exit)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB, from /proc/PID/status."""
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return rss, hwm


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process used so far."""
    fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")


def run_worker(args: list[str], *, logdir: Path, name: str, timeout: float = 900) -> dict[str, Any]:
    """Runs bench/workers.py with args in its own process; returns the JSON it prints last."""
    p = start_worker(args, logdir=logdir, name=name)
    return worker_result(p, timeout=timeout)


def start_worker(args: list[str], *, logdir: Path, name: str) -> subprocess.Popen:
    return spawn(name, [PY, str(BENCH / "workers.py"), *args], logdir=logdir, stdout=subprocess.PIPE)


def worker_result(p: subprocess.Popen, timeout: float = 900) -> dict[str, Any]:
    out, _ = p.communicate(timeout=timeout)
    if p in _procs:
        _procs.remove(p)
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        log = Path(p.bench_log).read_text()[-3000:]  # type: ignore[attr-defined]
        raise RuntimeError(f"worker {p.args!r} failed (exit {p.returncode}):\n{log}")
    return json.loads(lines[-1])


# --- nginx -------------------------------------------------------------------

NGINX_CONF = """
worker_processes {workers};
daemon off;
master_process on;
user root root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    # arrival time (ms resolution), the due time the sender put in X-Due-Ms, the notify id
    log_format bench '$msec $http_x_due_ms $http_notify_id';
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_buffer_size 64k;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=8192;
        access_log {log} bench{buffer};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


class Nginx:
    """nginx on a free 127.0.0.1 port answering every request (POST too) with 200.

    It logs one line per request ($msec, X-Due-Ms, Notify-Id): benchmarks count
    deliveries and arrival times from that log."""

    def __init__(self, logdir: Path, *, workers: int = 1, buffered: bool = True) -> None:
        self.dir = workdir("nginx")
        self.logdir = logdir
        self.port = free_port()
        self.log = self.dir / "access.log"
        self.workers = workers
        self.buffered = buffered
        self.proc: subprocess.Popen | None = None
        self._mark = -1
        self._pos = 0
        self._count = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> "Nginx":
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(
            workers=self.workers, dir=self.dir, port=self.port, log=self.log,
            buffer=" buffer=256k flush=50ms" if self.buffered else "",
        ))  # fmt: skip
        self.proc = spawn("nginx", [which("nginx"), "-c", str(conf), "-p", str(self.dir)], logdir=self.logdir)
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        stop(self.proc, signal.SIGQUIT, 10)
        self.proc = None

    def mark(self) -> int:
        """The log's size now: lines after it belong to what comes next."""
        time.sleep(0.1)  # the buffer flushes every 50 ms
        return self.log.stat().st_size if self.log.exists() else 0

    def count_since(self, mark: int) -> int:
        """Lines logged since mark (incremental: reads only what is new)."""
        if self._mark != mark:
            self._mark, self._pos, self._count = mark, mark, 0
        if not self.log.exists():
            return 0
        with open(self.log, "rb") as f:
            f.seek(self._pos)
            data = f.read()
        cut = data.rfind(b"\n") + 1
        self._count += data.count(b"\n", 0, cut)
        self._pos += cut
        return self._count

    def lines_since(self, mark: int) -> list[tuple[float, str, str]]:
        """(arrival seconds, X-Due-Ms or '-', Notify-Id or '-') for each line since mark."""
        with open(self.log, "rb") as f:
            f.seek(mark)
            data = f.read().decode()
        out = []
        for line in data.splitlines():
            parts = line.split()
            if len(parts) >= 3:
                out.append((float(parts[0]), parts[1], parts[2]))
        self._mark = -1
        return out


def wait_count(nginx: Nginx, mark: int, n: int, *, label: str, timeout: float, watch: Iterable[subprocess.Popen] = (),
               extra: Callable[[], str] | None = None) -> int:
    """Waits until nginx logged n lines since mark (or timeout); prints progress."""
    prog = Progress(label, n)
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        got = nginx.count_since(mark)
        prog.update(got, extra() if extra else "")
        if got >= n:
            break
        for p in watch:
            if p.poll() is not None and p.returncode != 0:
                raise RuntimeError(f"{getattr(p, 'bench_name', p.args)} exited with {p.returncode}; see {getattr(p, 'bench_log', '')}")
        time.sleep(0.05)
    prog.update(got, force=True)
    return got


# --- beanstalkd --------------------------------------------------------------


class Beanstalkd:
    """beanstalkd on a free 127.0.0.1 port with a binlog dir.

    fsync: None keeps beanstalkd's default with -b (fsync at most every 50 ms),
    0 is -f0 (fsync after every write), 'never' is -F."""

    def __init__(self, logdir: Path, *, fsync: int | str | None = None, binlog: bool = True) -> None:
        self.dir = workdir("beanstalkd")
        self.logdir = logdir
        self.port = free_port()
        self.fsync = fsync
        self.binlog = binlog
        self.proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        argv = [which("beanstalkd"), "-l", "127.0.0.1", "-p", str(self.port), "-z", "65535"]
        if self.binlog:
            argv += ["-b", str(self.dir / "binlog")]
        if self.fsync == "never":
            argv.append("-F")
        elif self.fsync is not None:
            argv += ["-f", str(self.fsync)]
        return argv

    @property
    def mode(self) -> str:
        if not self.binlog:
            return "no binlog"
        if self.fsync is None:
            return "binlog, fsync at most every 50 ms (default)"
        if self.fsync == "never":
            return "binlog, never fsync (-F)"
        return f"binlog, fsync every {self.fsync} ms" if self.fsync else "binlog, fsync on every write (-f0)"

    def start(self) -> "Beanstalkd":
        (self.dir / "binlog").mkdir(exist_ok=True)
        self.proc = spawn("beanstalkd", self.argv(), logdir=self.logdir)
        wait_port(self.port, timeout=600, proc=self.proc)  # replaying a big binlog takes a while
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop(self.proc, sig, 30)
        self.proc = None

    def stats(self) -> dict[str, str]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"stats\r\n")
            buf = b""
            while True:
                buf += s.recv(65536)
                head, _, rest = buf.partition(b"\r\n")
                if head.startswith(b"OK "):
                    size = int(head.split()[1])
                    if len(rest) >= size + 2:
                        body = rest[:size].decode()
                        break
        out = {}
        for line in body.splitlines():
            if ": " in line:
                k, v = line.split(": ", 1)
                out[k] = v
        return out


# --- the project -------------------------------------------------------------


def notifyagent_cmd() -> list[str]:
    """The command that runs the project; NOTIFYAGENT_CMD overrides it (e.g. to measure a patched build)."""
    if os.environ.get("NOTIFYAGENT_CMD"):
        return shlex.split(os.environ["NOTIFYAGENT_CMD"])
    exe = shutil.which("notifyagent")
    return [exe] if exe else [PY, "-m", "notifyagent"]


# --- the build measured: the current checkout, and with --before a cached build of another revision ---------


@dataclass
class Build:
    """One build of the project. cmd None: the current checkout (NOTIFYAGENT_CMD or the installed notifyagent)."""

    name: str  # "current" | "before"
    git: str  # short commit
    cmd: list[str] | None = None

    @property
    def label(self) -> str:
        return "current" if self.name == "current" else f"before {self.git}"

    @contextmanager
    def active(self) -> Iterator["Build"]:
        """While active, the project's processes start from this build (through NOTIFYAGENT_CMD, the one override)."""
        if self.cmd is None:
            yield self
            return
        old = os.environ.get("NOTIFYAGENT_CMD")
        os.environ["NOTIFYAGENT_CMD"] = shlex.join(self.cmd)
        try:
            yield self
        finally:
            if old is None:
                os.environ.pop("NOTIFYAGENT_CMD", None)
            else:
                os.environ["NOTIFYAGENT_CMD"] = old


BEFORE_RECIPE = "pip-install-e-postgres"  # changes when the way a before build is made changes: older caches are rebuilt


def _git(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True)


def _step(what: str, argv: list[str], log: Path, rev: str) -> None:
    with open(log, "ab") as f:
        f.write(f"$ {shlex.join(argv)}\n".encode())
        f.flush()
        p = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(REPO))
    if p.returncode != 0:
        raise SystemExit(f"bench/run: --before {rev}: {what} failed (exit {p.returncode}); see {log}")


def before_root() -> Path:
    """Where before builds are cached: BENCH_BEFORE_DIR, else ~/.cache/notifyagent-bench/before-<clone>/ (one per clone,
    shared by its worktrees). Not under bench/: a venv and a second source tree there would be walked by
    tests/test_structure.py, which reads every *.py under bench/."""
    if os.environ.get("BENCH_BEFORE_DIR"):
        return Path(os.environ["BENCH_BEFORE_DIR"]).resolve()
    common = (REPO / (_git("rev-parse", "--git-common-dir").stdout.strip() or ".git")).resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "notifyagent-bench" / f"before-{hashlib.sha1(str(common).encode()).hexdigest()[:8]}"


def _show(path: Path) -> str:
    home = str(Path.home())
    return str(path.relative_to(REPO)) if REPO in path.parents else (("~" + str(path)[len(home):]) if str(path).startswith(home + "/") else str(path))


def prepare_before(rev: str) -> Build:
    """The project built at git revision rev, prepared once in before_root()/<commit>/ (a git worktree and its own
    venv with `pip install -e .[postgres]`) and reused by every later run with the same commit; a lock keeps two
    runs from preparing it at once."""
    p = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if p.returncode != 0 or not p.stdout.strip():
        raise SystemExit(f"bench/run: --before {rev}: not a commit of {REPO} (git rev-parse found nothing)")
    sha = p.stdout.strip()
    root = before_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"bench/run: --before {rev}: cannot create the cache {root}: {e.strerror} (set BENCH_BEFORE_DIR)") from None
    with open(root / f"{sha[:12]}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _prepare(rev, sha, root / sha[:12])


def _prepare(rev: str, sha: str, d: Path) -> Build:
    short = sha[:7]
    src, venv, ready = d / "src", d / "venv", d / "ready"
    exe = venv / "bin" / "notifyagent"
    if ready.exists() and exe.exists() and ready.read_text().split() == [sha, BEFORE_RECIPE]:
        say(f"before build {short}: cached in {_show(d)}")
        return Build("before", short, [str(exe)])
    say(f"before build {short}: preparing once in {_show(d)} (later runs reuse it)")
    if d.exists():  # an earlier attempt stopped half way, or an older recipe: start over
        say(f"before build {short}: removing an unfinished or outdated earlier build")
        _git("worktree", "remove", "--force", str(src))
        shutil.rmtree(d, ignore_errors=True)
    _git("worktree", "prune")
    d.mkdir(parents=True)
    log = d / "prepare.log"
    say(f"before build {short}: git worktree add {_show(src)} (log {_show(log)})")
    _step("git worktree add", ["git", "-C", str(REPO), "worktree", "add", "--detach", "--force", str(src), sha], log, rev)
    say(f"before build {short}: python -m venv {_show(venv)}")
    _step("python -m venv", [PY, "-m", "venv", str(venv)], log, rev)
    # the PostgreSQL driver too (the e2e PostgreSQL rows), when that revision has the extra
    extra = "[postgres]" if re.search(r"^postgres\s*=", (src / "pyproject.toml").read_text(), re.M) else ""
    say(f"before build {short}: pip install -e .{extra} (a minute or two)")
    _step("pip install", [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-e", f"{src}{extra}"], log, rev)
    if not exe.exists():
        raise SystemExit(f"bench/run: --before {rev}: pip installed no notifyagent command in {venv}; see {log}")
    ready.write_text(f"{sha} {BEFORE_RECIPE}\n")
    say(f"before build {short}: ready ({_show(exe)})")
    return Build("before", short, [str(exe)])


def builds(before: str) -> list[Build]:
    """The builds to measure, in order: with --before, the before build first, then the current checkout."""
    cur = Build("current", _git("rev-parse", "--short=7", "HEAD").stdout.strip() or "-")
    return [prepare_before(before), cur] if before else [cur]


def build_args(parser) -> None:
    parser.add_argument("--before", metavar="GIT_REV", default="",
                        help="also measure the project built at GIT_REV (cached in ~/.cache/notifyagent-bench/), one after the other "
                             "with the current checkout, beside the same baselines")  # fmt: skip


@dataclass
class Project:
    """The project's processes: `dev` (all in one), `split` (scheduler + N dispatchers) or `multi`
    (`schedulers` schedulers sharing one PostgreSQL store + N dispatchers streaming from each)."""

    logdir: Path
    mode: str = "dev"  # dev | split | scheduler (scheduler alone, no dispatcher)
    dispatchers: int = 2
    schedulers: int = 1  # mode multi
    store: str | None = None  # URL; default a fresh SQLite file (synchronous=FULL, the default)
    extra: list[str] = field(default_factory=list)
    port: int = 0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    db: Path | None = None

    def __post_init__(self) -> None:
        if self.store is None:
            self.db = workdir("store") / "notifyagent.db"
            self.store = f"sqlite:///{self.db}"
        self.port = self.port or free_port()
        self.ports = [self.port] + [free_port() for _ in range(self.schedulers - 1)]

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def addrs(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.ports]

    def _common(self) -> list[str]:
        return ["--http-addr", "", "--log-level", "WARNING"]

    def start(self, *, wait_dispatchers: bool = True, timeout: float = 120) -> "Project":
        na = notifyagent_cmd()
        if self.mode == "dev":
            self.procs["dev"] = spawn("notifyagent-dev", [*na, "dev", "--grpc-addr", self.addr, "--store", self.store,
                                      "--allow-networks", "127.0.0.0/8", *self._common(), *self.extra], logdir=self.logdir)  # fmt: skip
            expect = 1
        else:
            for i, addr in enumerate(self.addrs):
                name = "scheduler" if i == 0 else f"scheduler{i + 1}"
                self.procs[name] = spawn(f"notifyagent-{name}", [*na, "scheduler", "--grpc-addr", addr,
                                         "--store", self.store, *self._common(), *self.extra], logdir=self.logdir)  # fmt: skip
                wait_grpc_ready(addr, timeout=timeout, proc=self.procs[name])
            expect = 0
        wait_grpc_ready(self.addr, timeout=timeout, proc=self.main)
        if self.mode in ("split", "multi"):
            self.start_dispatchers()
            expect = self.dispatchers
        if wait_dispatchers and expect:
            for addr in self.addrs if self.mode == "multi" else [self.addr]:  # status adds up over schedulers
                wait_dispatchers_connected(addr, expect * len(self.addrs), timeout=30)
        return self

    def start_dispatchers(self) -> None:
        na = notifyagent_cmd()
        for i in range(self.dispatchers):
            self.procs[f"dispatcher{i + 1}"] = spawn(
                f"notifyagent-dispatcher{i + 1}",
                [*na, "dispatcher", "--registry", f"static:{','.join(self.addrs)}", "--allow-networks", "127.0.0.0/8",
                 *self._common()],
                logdir=self.logdir,
            )

    @property
    def main(self) -> subprocess.Popen:
        return self.procs.get("dev") or self.procs["scheduler"]

    def pids(self) -> dict[str, int]:
        return {k: p.pid for k, p in self.procs.items()}

    def stop(self, sig: int = signal.SIGTERM) -> None:
        for name in [k for k in self.procs if k.startswith("dispatcher")]:
            stop(self.procs.pop(name), sig, 40)
        for name in list(self.procs):
            stop(self.procs.pop(name), sig, 40)


def wait_grpc_ready(addr: str, *, timeout: float = 60, proc: subprocess.Popen | None = None) -> float:
    """Waits until the health service answers SERVING; returns the seconds it took."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    start = time.monotonic()
    deadline = start + timeout
    # the port first: a gRPC channel that failed to connect waits out its reconnect backoff (~1 s)
    wait_port(int(addr.rsplit(":", 1)[1]), timeout=timeout, proc=proc)
    with grpc.insecure_channel(addr) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{getattr(proc, 'bench_name', proc.args)} exited with {proc.returncode}; "
                                   f"see {getattr(proc, 'bench_log', '')}")  # fmt: skip
            try:
                r = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic() - start
            except grpc.RpcError:
                pass
            time.sleep(0.02)
    raise TimeoutError(f"scheduler at {addr} not SERVING after {timeout} s")


def get_status(addr: str, timeout: float = 30):
    import grpc

    from notifyagent.v1 import admin_service_pb2 as admin_pb, admin_service_pb2_grpc as admin_grpc

    with grpc.insecure_channel(addr) as ch:
        return admin_grpc.AdminServiceStub(ch).GetStatus(admin_pb.GetStatusRequest(), timeout=timeout)


def wait_dispatchers_connected(addr: str, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(get_status(addr, timeout=5).dispatchers) >= n:
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{n} dispatchers did not connect to {addr} within {timeout} s")


# --- a quiet machine -------------------------------------------------------------


def _cpu_times() -> tuple[int, int]:
    vals = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals[:8]), idle


def busy_share(interval: float = 1.0) -> float:
    """Share of all cores busy over `interval` seconds (0..1), whoever uses them."""
    t0, i0 = _cpu_times()
    time.sleep(interval)
    t1, i1 = _cpu_times()
    return 1 - (i1 - i0) / max(1, t1 - t0)


QUIET_WAIT = {"max": 90.0}
BUSY_SEEN: list[float] = []


def wait_quiet(max_wait: float | None = None, threshold: float = 0.15) -> float:
    """Before measuring: waits (up to max_wait s) until other work leaves the cores idle.

    Other people's test suites on the same 2 cores skew every number; returns the
    busy share last seen (recorded with the results)."""
    max_wait = QUIET_WAIT["max"] if max_wait is None else max_wait
    deadline = time.monotonic() + max_wait
    busy = busy_share()
    warned = False
    while busy > threshold and time.monotonic() < deadline:
        if not warned:
            say(f"the machine is busy ({busy:.0%} of all cores used by other processes); waiting up to {max_wait:.0f} s for it to calm down")
            warned = True
        busy = busy_share(2.0)
    BUSY_SEEN.append(round(busy, 3))
    if busy > threshold:
        say(f"WARNING: measuring on a busy machine ({busy:.0%} of the cores used by other processes): numbers are skewed")
    return round(busy, 3)


# --- tools ---------------------------------------------------------------------


def which(tool: str) -> str:
    for d in ("", "/usr/sbin/", "/usr/bin/", "/sbin/"):
        path = shutil.which(tool) if not d else (d + tool if os.access(d + tool, os.X_OK) else None)
        if path:
            return path
    raise SystemExit(f"{tool} is missing: run bench/setup (apt-get install -y {tool})")


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * (len(sorted_values) - 1)))))
    return sorted_values[k]


def setup_run(quick: bool) -> None:
    """--quick waits at most 3 s for a quiet machine (instead of 90 s)."""
    QUIET_WAIT["max"] = 3.0 if quick else 90.0


def common_args(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke check in under 60 s")
    parser.add_argument("--profile", action="store_true", help="also record a py-spy profile of the project (bench/out/profiles/)")


def run_dir(bench: str) -> Path:
    d = OUT / "logs" / f"{bench}-{time.strftime('%Y%m%d-%H%M%S')}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def py_spy(pid: int, name: str, seconds: float, *, rate: int = 250) -> subprocess.Popen | None:
    """Starts py-spy record on pid for `seconds` (raw collapsed stacks + SVG flame graph); None if py-spy is missing."""
    exe = shutil.which("py-spy")
    if not exe:
        say("py-spy missing (pip install py-spy): no profile")
        return None
    d = OUT / "profiles"
    d.mkdir(parents=True, exist_ok=True)
    argv = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate),
            "--format", "raw", "--threads", *(["--gil"] if os.environ.get("BENCH_PYSPY_GIL") else []), "-o", str(d / f"{name}.txt"), "--nonblocking"]  # fmt: skip
    return spawn(f"py-spy-{name}", argv, logdir=d)


class Traced:
    """A command run under `strace -f -c` counting the sync calls (fsync, fdatasync, ...).

    Stopping signals the traced program itself (not strace), so strace writes its summary."""

    CALLS = "trace=fsync,fdatasync,sync_file_range,msync,sync,syncfs"

    def __init__(self, name: str, argv: list[str], *, logdir: Path) -> None:
        self.out = workdir("strace") / "strace.txt"
        self.proc = spawn(name, [which("strace"), "-f", "--seccomp-bpf", "-c", "-e", self.CALLS, "-o", str(self.out), *argv],
                          logdir=logdir)  # fmt: skip

    def child_pid(self, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            except OSError:
                kids = []
            if kids:
                return int(kids[0])
            time.sleep(0.02)
        raise RuntimeError("strace started no child")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> dict[str, int]:
        try:
            os.kill(self.child_pid(1), sig)
            self.proc.wait(timeout)
        except (RuntimeError, ProcessLookupError, subprocess.TimeoutExpired):
            pass
        stop(self.proc, signal.SIGTERM, 10)
        counts: dict[str, int] = {}
        if self.out.exists():
            for line in self.out.read_text().splitlines():
                m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
                if m and m.group(2) != "total":
                    counts[m.group(2)] = int(m.group(1))
        return counts


def follow_worker(p: subprocess.Popen, label: str, *, every: float = 5.0, extra: Callable[[], str] | None = None,
                  timeout: float = 3600) -> dict[str, Any]:
    """Waits for a worker, printing its last progress line (from its log) every `every` s; returns its JSON."""
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    while p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        if time.monotonic() - last >= every:
            last = time.monotonic()
            try:
                tail = Path(p.bench_log).read_text().strip().splitlines()[-1:]  # type: ignore[attr-defined]
            except OSError:
                tail = []
            say(f"{label}: {tail[0] if tail else '...'}{'; ' + extra() if extra else ''}")
    return worker_result(p, timeout=max(1, deadline - time.monotonic()))


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
