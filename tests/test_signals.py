"""SIGHUP reloads the settings: flags, environment and the config file are read again; capacity
and log level change while running, the rest waits for a restart."""

import asyncio
import logging
import re
import signal
import time

import grpc
import pytest

from notifyagent.common.config import ConfigError, load
from notifyagent import runner
from notifyagent.runner import reload_settings
from notifyagent.v1 import admin_service_pb2, admin_service_pb2_grpc, notify_pb2 as pb, notify_service_pb2 as api, notify_service_pb2_grpc
from support import Proc, free_port, wait_serving, open_channel


class FakeApp:
    def __init__(self, live, error=None):
        self.live, self.error, self.got = frozenset(live), error, None

    async def reload(self, settings):
        self.got = settings
        if self.error:
            raise self.error
        return [f"did {name}" for name in sorted(self.live)]


async def test_reload_reads_the_file_again_keeps_flags_on_top_and_ignores_what_needs_a_restart(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("NOTIFY_CAPACITY", raising=False)
    config = tmp_path / "n.toml"
    config.write_text('capacity = 3\ngrace = 5.0\ngrpc_addr = "127.0.0.1:7000"\n')
    flags = {"config": str(config), "grace": 9.0, "capacity": None}  # as argparse gives them
    current = load(flags)
    config.write_text('capacity = 6\ngrace = 1.0\ngrpc_addr = "127.0.0.1:7001"\nlog_level = "WARNING"\n')
    app = FakeApp(["capacity"])
    configured = []
    monkeypatch.setattr(runner.logs, "configure", lambda fmt, level, file="": configured.append((fmt, level)))
    with caplog.at_level(logging.INFO, logger="notifyagent.runner"):
        now = await reload_settings("dispatcher", app, current, flags)
    assert configured == [("console", "WARNING")]
    assert app.got.capacity == 6 and app.got.grace == 9.0, "the flag still beats the file"
    assert (now.capacity, now.log_level, now.grpc_addr) == (6, "WARNING", "127.0.0.1:7000")
    text = caplog.text
    assert "capacity changed: 3 -> 6" in text and "log_level changed: 'INFO' -> 'WARNING'" in text
    assert "grpc_addr changed ('127.0.0.1:7000' -> '127.0.0.1:7001') but needs a restart; ignored" in text
    assert "SIGHUP: did capacity" in text
    assert "grace" not in text


async def test_without_its_flags_a_reload_puts_the_file_over_the_settings_in_force(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_CAPACITY", raising=False)
    config = tmp_path / "n.toml"
    config.write_text("grace = 5.0\n")
    current = load({"config": str(config), "capacity": 7})
    config.write_text("grace = 2.0\n")
    app = FakeApp(["capacity", "grace"])
    now = await reload_settings("dispatcher", app, current, None)
    assert (now.grace, now.capacity) == (2.0, 7), "the flag-set capacity is not reset to its default"


async def test_a_reload_the_app_refuses_changes_nothing(tmp_path, caplog):
    config = tmp_path / "n.toml"
    config.write_text("capacity = 3\n")
    current = load({"config": str(config)})
    config.write_text('capacity = 4\nlog_level = "DEBUG"\n')
    app = FakeApp(["capacity"], error=ConfigError("NOTIFY_QUEUES: bad"))
    with caplog.at_level(logging.INFO, logger="notifyagent.runner"):
        assert await reload_settings("dispatcher", app, current, {"config": str(config)}) is current
    assert "keeping the current settings: NOTIFY_QUEUES: bad" in caplog.text and "changed" not in caplog.text


async def test_a_bad_config_file_on_reload_keeps_the_current_settings(tmp_path, caplog):
    config = tmp_path / "n.toml"
    config.write_text("capacity = 3\n")
    current = load({"config": str(config)})
    config.write_text("capacity = [\n")
    with caplog.at_level(logging.ERROR, logger="notifyagent.runner"):
        assert await reload_settings("dispatcher", FakeApp([]), current, {"config": str(config)}) is current
    assert "keeping the current settings" in caplog.text


@pytest.fixture
async def scheduler_port(tmp_path):
    port = free_port()
    proc = Proc(["scheduler", "--grpc-addr", f"127.0.0.1:{port}", "--http-addr", "", "--store", f"sqlite:///{tmp_path}/n.db"],
                log_path=tmp_path / "scheduler.log").start()  # fmt: skip
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=proc)
        yield port
    finally:
        await asyncio.to_thread(proc.terminate)


def dispatcher(tmp_path, port, config, *extra, name="dispatcher"):
    # Settings that must survive a reload come from the environment, which the process keeps.
    env = {"NOTIFY_REGISTRY": f"static:127.0.0.1:{port}", "NOTIFY_ALLOW_NETWORKS": "127.0.0.0/8", "NOTIFY_HTTP_ADDR": ""}
    return Proc(["dispatcher", "--config", str(config), *extra], log_path=tmp_path / f"{name}.log", env=env)


async def capacities(port):
    async with open_channel(f"127.0.0.1:{port}") as channel:
        status = await admin_service_pb2_grpc.AdminServiceStub(channel).GetStatus(admin_service_pb2.GetStatusRequest())
    return sorted(d.capacity for d in status.dispatchers)


async def wait_capacities(port, expected, proc, timeout=20.0):
    deadline = time.monotonic() + timeout
    while (got := await capacities(port)) != expected:
        assert time.monotonic() < deadline, f"capacities {got}, expected {expected}:\n{proc.log()}"
        await asyncio.sleep(0.05)


async def send(port, url, count):
    async with open_channel(f"127.0.0.1:{port}") as channel:
        stub = notify_service_pb2_grpc.NotifyServiceStub(channel)
        reqs = [api.CreateNotifyRequest(notify=pb.Notify(request=pb.HttpRequest(url=url))) for _ in range(count)]
        await stub.BatchCreateNotify(api.BatchCreateNotifyRequest(requests=reqs))


async def test_sighup_changes_a_dispatchers_capacity_and_log_level_while_it_runs(tmp_path, target, scheduler_port):
    target.respond("/slow", (200, 0.4))
    config = tmp_path / "dispatcher.toml"
    config.write_text('capacity = 3\nlog_level = "INFO"\n')
    proc = dispatcher(tmp_path, scheduler_port, config).start()
    try:
        await wait_capacities(scheduler_port, [3], proc)
        await send(scheduler_port, target.url("/slow"), 9)
        await target.wait_for(9)
        assert target.max_in_flight == 3

        config.write_text('capacity = 6\nlog_level = "DEBUG"\ngrpc_addr = "127.0.0.1:1"\n')
        proc.popen.send_signal(signal.SIGHUP)
        await wait_capacities(scheduler_port, [6], proc)
        target.max_in_flight = 0
        await send(scheduler_port, target.url("/slow"), 12)
        await target.wait_for(21)
        assert target.max_in_flight == 6, "the scheduler grants up to the new capacity"
        log = proc.log()
        assert "SIGHUP: capacity changed: 3 -> 6" in log and "SIGHUP: log_level changed: 'INFO' -> 'DEBUG'" in log
        assert "SIGHUP: grpc_addr changed ('127.0.0.1:50051' -> '127.0.0.1:1') but needs a restart; ignored" in log
        assert re.search(r"DEBUG +notifyagent\.dispatcher\.http: notify \S+ attempt 1: POST -> 200 ok", log), "DEBUG now shows"

        config.write_text('capacity = 2\nlog_level = "INFO"\n')
        proc.popen.send_signal(signal.SIGHUP)
        await wait_capacities(scheduler_port, [2], proc)
        await asyncio.sleep(0.5)  # calls started under the old capacity finish
        target.max_in_flight = 0
        await send(scheduler_port, target.url("/slow"), 6)
        await target.wait_for(27)
        await asyncio.sleep(0.5)
        assert target.max_in_flight == 2
        assert len(set(target.ids())) == 27, "reconnecting for a new capacity loses and repeats nothing"
        assert await asyncio.to_thread(proc.terminate) == 0
    finally:
        proc.kill()


async def test_sighup_to_a_supervisor_replaces_its_workers_with_the_new_settings(tmp_path, target, scheduler_port):
    config = tmp_path / "dispatcher.toml"
    config.write_text("capacity = 3\nprocesses = 2\n")
    proc = dispatcher(tmp_path, scheduler_port, config, name="supervisor").start()
    try:
        await wait_capacities(scheduler_port, [3, 3], proc)
        config.write_text("capacity = 5\nprocesses = 2\n")
        proc.popen.send_signal(signal.SIGHUP)
        await wait_capacities(scheduler_port, [5, 5], proc)
        assert len(re.findall(r"recycling pid \d+ \(settings reloaded\)", proc.log())) == 2
        await send(scheduler_port, target.url("/after"), 10)
        await target.wait_for(10)
        assert await asyncio.to_thread(proc.terminate) == 0
        assert "killed by" not in proc.log()
    finally:
        proc.kill()


async def test_sighup_to_dev_applies_the_dispatchers_capacity_and_the_schedulers_queue_limits(tmp_path):
    port = free_port()
    config = tmp_path / "dev.toml"
    config.write_text('capacity = 3\nqueues = "default:max_concurrent=5"\n')
    proc = Proc(["dev", "--config", str(config)], log_path=tmp_path / "dev.log",
                env={"NOTIFY_GRPC_ADDR": f"127.0.0.1:{port}", "NOTIFY_HTTP_ADDR": "", "NOTIFY_STORE": f"sqlite:///{tmp_path}/n.db"})
    proc.start()
    try:
        await wait_serving(f"127.0.0.1:{port}", proc=proc)
        await wait_capacities(port, [3], proc)
        config.write_text('capacity = 4\nqueues = "default:max_concurrent=2"\n')
        proc.popen.send_signal(signal.SIGHUP)
        await wait_capacities(port, [4], proc)
        async with open_channel(f"127.0.0.1:{port}") as channel:
            status = await admin_service_pb2_grpc.AdminServiceStub(channel).GetStatus(admin_service_pb2.GetStatusRequest())
        assert [q.max_concurrent for q in status.queues if q.name == "default"] == [2], proc.log()
        assert "SIGHUP: queues changed: 'default:max_concurrent=5' -> 'default:max_concurrent=2'" in proc.log()
        assert await asyncio.to_thread(proc.terminate) == 0
    finally:
        proc.kill()
