"""One process owns a SQLite store file: a second one on the same file refuses to start."""

import subprocess
import sys

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
