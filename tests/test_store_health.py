"""Health follows the store: NOT_SERVING while it cannot commit (a full disk), SERVING again
once it can; an outage causes no duplicates and no UNKNOWN."""

import asyncio
import errno
import os
import subprocess
import time

import grpc
import pytest

from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api
from support import System, settings_for


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(path) -> None:
    """Writes until the disk is full, to the last byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (64 << 10, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)


async def wait_serving(system, want: bool, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while await system.serving() != want:
        assert time.monotonic() < deadline, f"health never became {'SERVING' if want else 'NOT_SERVING'}"
        await asyncio.sleep(0.1)


async def test_health_flips_with_a_full_disk_and_back_without_duplicates(small_disk, tmp_path, target):
    system = System(settings_for(tmp_path, store=f"sqlite:///{small_disk}/n.db"))
    await system.start()
    try:
        target.respond("/slow", (200, 1.0))
        in_flight = await system.create(target.url("/slow"))
        await target.wait_for(0, timeout=1)
        await asyncio.sleep(0.3)  # its call is under way
        fill(small_disk / "filler")
        big = pb.Notify(request=pb.HttpRequest(url=target.url("/big"), body=b"x" * (512 << 10)))
        with pytest.raises(grpc.RpcError) as e:
            await system.api.CreateNotify(api.CreateNotifyRequest(notify=big))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
        await wait_serving(system, False)
        await asyncio.sleep(1.5)  # the in-flight call's result waits for the store meanwhile
        os.unlink(small_disk / "filler")
        await wait_serving(system, True)
        done = await system.wait_state(in_flight.id, pb.STATE_SUCCEEDED, timeout=15)
        assert len(done.attempts) == 1
        after = await system.create(target.url("/after"))
        await system.wait_state(after.id, pb.STATE_SUCCEEDED)
        await asyncio.sleep(0.5)
        assert [r.path for r in target.received].count("/slow") == 1, "the outage sent nothing twice"
    finally:
        await system.stop()
