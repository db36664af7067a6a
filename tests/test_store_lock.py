"""One process owns a SQLite store file: a second one on the same file refuses to start."""

import subprocess
import sys

import pytest
from support import Proc, free_port, wait_serving


async def test_a_second_process_on_the_same_sqlite_file_exits_at_once_naming_the_file_and_holder(tmp_path):
    store = f"sqlite:///{tmp_path}/n.db"
    first = Proc(["dev", "--grpc-addr", f"127.0.0.1:{free_port()}", "--http-addr", "", "--store", store],
                 log_path=tmp_path / "first.log").start()  # fmt: skip
    try:
        await wait_serving(first.args[2], proc=first)
        second = subprocess.run(
            [sys.executable, "-m", "notifyagent", "dev", "--grpc-addr", f"127.0.0.1:{free_port()}", "--http-addr", "",
             "--store", store],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert second.returncode != 0
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"{tmp_path}/n.db" in lines[0] and f"pid {first.popen.pid}" in lines[0], lines[0]
        assert "Traceback" not in second.stderr
        await wait_serving(first.args[2], proc=first)  # the owner is untouched
    finally:
        assert first.terminate() == 0
    again = Proc(["dev", "--grpc-addr", f"127.0.0.1:{free_port()}", "--http-addr", "", "--store", store],
                 log_path=tmp_path / "again.log").start()  # fmt: skip
    try:
        await wait_serving(again.args[2], proc=again)  # the lock went with its holder
    finally:
        again.terminate()


async def test_a_sqlite_library_too_old_for_the_store_is_refused_at_open_in_one_line(tmp_path, monkeypatch):
    """RETURNING needs SQLite 3.35 and UPDATE ... FROM 3.33: an older library (a Python built
    against it) is named at open, before the store file or its lock is touched, not met as a
    syntax error at the first write."""
    import sqlite3

    from notifyagent.common.config import ConfigError
    from notifyagent.scheduler.store.sqlite import SqliteStore

    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    store = SqliteStore(str(tmp_path / "n.db"))
    with pytest.raises(ConfigError) as e:
        await store.open()
    assert str(e.value) == ("NOTIFY_STORE: this Python's SQLite is 3.31.1; the SQLite store needs 3.35.0 or later"
                            " (RETURNING, UPDATE ... FROM): use a Python built with a newer SQLite, or a postgresql:// store")
    assert list(tmp_path.iterdir()) == []
