"""An operator's mistake never shows a traceback: every bad setting, bad CLI value, port in
use and unreachable store or registry ends the real process with one line on stderr naming
the problem and the setting, and exit code 2. `--debug` shows the traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import asyncpg
import pytest

from support import Proc, free_port, wait_serving

PG_DSN = os.environ.get("NOTIFY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
URL = "http://127.0.0.1:9/hook"


def run(tmp_path, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
    return subprocess.run([sys.executable, "-m", "notifyagent", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=tmp_path, env={**clean, **(env or {})})  # fmt: skip


def assert_one_line(out: subprocess.CompletedProcess, *names: str) -> None:
    lines = out.stderr.splitlines()
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ") and all(n in lines[0] for n in names), lines[0]


FREE = "127.0.0.1:0"  # so a case fails for its own reason, not a port some other test holds
BAD_SETTINGS = [
    (["scheduler"], {"NOTIFY_STORE": "mysql://x"}, "NOTIFY_STORE"),
    (["dev"], {"NOTIFY_STORE": "sqlite:///n.db?synchronous=SOMETIMES"}, "NOTIFY_STORE"),
    (["scheduler"], {"NOTIFY_REGISTRY": "zookeeper://x"}, "NOTIFY_REGISTRY"),
    (["scheduler"], {"NOTIFY_REGISTRY": "consul://127.0.0.1:notaport"}, "NOTIFY_REGISTRY"),
    (["dispatcher"], {"NOTIFY_REGISTRY": "memory"}, "NOTIFY_REGISTRY"),  # no way to find a scheduler
    (["dev"], {"NOTIFY_ALLOW_NETWORKS": "10.0.0.0/33"}, "NOTIFY_ALLOW_NETWORKS"),
    (["dispatcher", "--registry", "static:127.0.0.1:1"], {"NOTIFY_ALLOW_NETWORKS": "lan"}, "NOTIFY_ALLOW_NETWORKS"),
    (["scheduler"], {"NOTIFY_QUEUES": "mail:speed=3"}, "NOTIFY_QUEUES"),
    (["dev"], {"NOTIFY_QUEUES": "mail:rate=fast"}, "NOTIFY_QUEUES"),
    (["dispatcher"], {"NOTIFY_CAPACITY": "many"}, "NOTIFY_CAPACITY"),
    (["dev"], {"NOTIFY_LOG_FORMAT": "xml"}, "NOTIFY_LOG_FORMAT"),
    (["dev"], {"NOTIFY_LOG_LEVEL": "LOUD"}, "NOTIFY_LOG_LEVEL"),
    (["scheduler"], {"NOTIFY_GRPC_ADDR": "nowhere"}, "NOTIFY_GRPC_ADDR"),
    (["scheduler"], {"NOTIFY_HTTP_ADDR": "nowhere"}, "NOTIFY_HTTP_ADDR"),
    (["dev"], {"NOTIFY_CONFIG": "/no/such/file.toml"}, "NOTIFY_CONFIG"),
    (["dev"], {"NOTIFY_EVENT_LOOP": "fast"}, "NOTIFY_EVENT_LOOP"),
    (["dev"], {"NOTIFY_GRACE": "-1"}, "NOTIFY_GRACE"),
    (["dispatcher", "--registry", "static:127.0.0.1:1"], {"NOTIFY_SIGNING_SECRET": "whsec_!!!"}, "NOTIFY_SIGNING_SECRET"),
    (["dev", "--capacity", "0"], {}, "NOTIFY_CAPACITY"),
    (["scheduler"], {"NOTIFY_GRPC_ADDR": "127.0.0.1:99999"}, "NOTIFY_GRPC_ADDR"),  # grpc would wrap it to 34463
    (["scheduler"], {"NOTIFY_ADVERTISE_ADDR": "scheduler"}, "NOTIFY_ADVERTISE_ADDR"),
    (["scheduler"], {"NOTIFY_MAX_BODY_BYTES": "-1"}, "NOTIFY_MAX_BODY_BYTES"),
    (["scheduler"], {"NOTIFY_LEASE_MARGIN": "-5"}, "NOTIFY_LEASE_MARGIN"),
    (["scheduler"], {"NOTIFY_SERVICE_NAME": " "}, "NOTIFY_SERVICE_NAME"),
    (["scheduler"], {"NOTIFY_REGISTRY": "static:"}, "NOTIFY_REGISTRY"),
]


@pytest.mark.parametrize("args, env, name", BAD_SETTINGS, ids=[f"{a[0]}-{n}-{i}" for i, (a, _, n) in enumerate(BAD_SETTINGS)])
def test_a_bad_setting_is_one_line_and_exit_2(tmp_path, args, env, name):
    env = {"NOTIFY_GRPC_ADDR": FREE, "NOTIFY_HTTP_ADDR": "", **env}
    assert_one_line(run(tmp_path, *args, env=env), name)


BAD_VALUES = [
    (["send", URL, "--at", "yesterday"], "--at"),
    (["send", URL, "--data", "@/missing/file"], "--data"),
    (["send", URL, "--delay", "soon"], "--delay"),
    (["send", URL, "--timeout", "-5s"], "--timeout"),
    (["send", URL, "-X", "fetch"], "--method"),
    (["send", URL, "-H", "NoColon"], "--header"),
    (["send", URL, "--label", "novalue"], "--label"),
    (["send", URL, "--max-attempts", "many"], "--max-attempts"),
    (["send", URL, "--json", "{}", "--data", "x"], "--data"),
    (["list", "--state", "SLEEPING"], "--state"),
    (["trigger"], "key"),
    (["teleport"], "teleport"),
    (["dispatcher", "--store", "sqlite:///n.db"], "--store"),  # role-specific flags only on their roles
    (["scheduler", "--capacity", "4"], "--capacity"),
]


@pytest.mark.parametrize("args, name", BAD_VALUES, ids=[" ".join(a[:1] + a[2:] if a[0] == "send" else a) for a, _ in BAD_VALUES])
def test_a_bad_cli_value_is_one_line_and_exit_2(tmp_path, args, name):
    assert_one_line(run(tmp_path, *args), name)


def test_unreadable_client_tls_files_are_one_line_and_exit_2(tmp_path):
    assert_one_line(run(tmp_path, "status", env={"NOTIFY_TLS_CA": "/no/such/ca.pem"}), "NOTIFY_TLS_CA")


@pytest.fixture
def taken():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield f"127.0.0.1:{s.getsockname()[1]}"


QUIET = {"NOTIFY_LOG_LEVEL": "WARNING"}  # INFO lines of a start that then fails are not the error


@pytest.mark.parametrize("role", ["dev", "scheduler"])
def test_grpc_port_in_use_is_an_error(tmp_path, taken, role):
    assert_one_line(run(tmp_path, role, "--grpc-addr", taken, "--http-addr", "", env=QUIET), "NOTIFY_GRPC_ADDR", taken)


@pytest.mark.parametrize("role", ["dev", "scheduler", "dispatcher"])
def test_http_port_in_use_is_an_error(tmp_path, taken, role):
    args = [role, "--http-addr", taken] + (["--registry", "static:127.0.0.1:1"] if role == "dispatcher" else ["--grpc-addr", FREE])
    assert_one_line(run(tmp_path, *args, env=QUIET), "NOTIFY_HTTP_ADDR", taken)


async def test_a_second_dev_on_the_same_grpc_port_does_not_start(tmp_path):
    port = free_port()
    first = Proc(["dev", "--grpc-addr", f"127.0.0.1:{port}", "--http-addr", "", "--store", f"sqlite:///{tmp_path}/a.db"],
                 log_path=tmp_path / "first.log").start()  # fmt: skip
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=first)
        second = run(tmp_path, "dev", "--grpc-addr", f"127.0.0.1:{port}", "--http-addr", "127.0.0.1:0",
                     "--store", f"sqlite:///{tmp_path}/b.db", env=QUIET)  # fmt: skip
        assert_one_line(second, "NOTIFY_GRPC_ADDR")
    finally:
        first.terminate()


@pytest.mark.parametrize("store", ["sqlite:////proc/no/such/dir/n.db", "sqlite:////etc/hostname",
                                   f"postgresql://127.0.0.1:{free_port()}/nothing_listens"])  # fmt: skip
def test_a_store_that_cannot_be_opened_is_an_error(tmp_path, store):
    out = run(tmp_path, "scheduler", "--store", store, "--grpc-addr", FREE, "--http-addr", "", env=QUIET)
    assert_one_line(out, "NOTIFY_STORE")


@pytest.mark.parametrize("role", ["scheduler", "dispatcher"])
def test_an_unreachable_consul_is_an_error(tmp_path, role):
    args = [role, "--registry", f"consul://127.0.0.1:{free_port()}", "--http-addr", ""]
    assert_one_line(run(tmp_path, *args, *(["--grpc-addr", FREE] if role == "scheduler" else []), env=QUIET), "NOTIFY_REGISTRY")


async def test_a_missing_postgresql_database_is_an_error(tmp_path):
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError) as e:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at NOTIFY_TEST_POSTGRES is unreachable: {e}")
        pytest.skip(f"PostgreSQL at NOTIFY_TEST_POSTGRES is unreachable: {e}")
    await conn.close()
    store = PG_DSN.rsplit("/", 1)[0] + "/no_such_database_here"
    out = run(tmp_path, "scheduler", "--store", store, "--grpc-addr", FREE, "--http-addr", "", env=QUIET)
    assert_one_line(out, "NOTIFY_STORE", "no_such_database_here")


def test_debug_shows_the_traceback(tmp_path, taken):
    out = run(tmp_path, "--debug", "scheduler", "--grpc-addr", taken, "--http-addr", "", env=QUIET)
    assert out.returncode == 2 and "Traceback" in out.stderr and out.stderr.splitlines()[-1].startswith("error: ")
    out = run(tmp_path, "scheduler", "--debug", "--store", "mysql://x")
    assert out.returncode == 2 and "Traceback" in out.stderr and "NOTIFY_STORE" in out.stderr.splitlines()[-1]


def test_every_flag_of_send_has_help(tmp_path):
    from notifyagent.cli import build_parser

    send = build_parser()._subparsers._group_actions[0].choices["send"]
    missing = [a.dest for a in send._actions if not a.help and a.dest != "help"]
    assert missing == []
