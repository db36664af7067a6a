"""The link between a dispatcher worker process and its supervisor: one pipe, lines of text.

The worker writes `ready <dispatcher id>` once its Lease stream is up, and
`calls <n>` (made so far) and `running <n>` (in flight) every REPORT_EVERY_S. When a write finds the pipe closed, the
supervisor is gone and the worker stops gracefully rather than run orphaned.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Callable

from .client import LeaseClient

log = logging.getLogger(__name__)
LINK_ENV = "NOTIFYAGENT_SUPERVISOR_FD"  # not a setting: set only by the supervisor for its workers
SLOT_ENV = "NOTIFYAGENT_WORKER_SLOT"  # which of the supervisor's slots a worker fills (for its process title)
REPORT_EVERY_S = 0.2


def link_fd() -> int | None:
    """The pipe to the supervisor when this process is one of its workers."""
    value = os.environ.get(LINK_ENV, "")
    return int(value) if value.isdigit() else None


async def report_to_supervisor(
    fd: int, client: LeaseClient, *, orphaned: Callable[[], None], keep_fd: Callable[[], bool] = lambda: False
) -> None:
    """Runs until cancelled (after the worker stopped: it sends the final count), or until
    the supervisor is gone (then calls orphaned()). The pipe stays open when keep_fd()
    says so: a worker restarting in place (SIGUSR1) reports on it again after exec."""
    os.set_blocking(fd, False)
    ready_sent = False
    try:
        while True:
            lines = []
            if not ready_sent and client.connected:
                lines.append(f"ready {client.dispatcher_id}")
                ready_sent = True
            lines.append(f"calls {client.calls_done}")
            lines.append(f"running {client.in_flight}")
            try:
                os.write(fd, "".join(f"{line}\n" for line in lines).encode())
            except BlockingIOError:  # the pipe is full (writes this small go whole or not at all)
                ready_sent = not lines[0].startswith("ready")
            await asyncio.sleep(REPORT_EVERY_S)
    except OSError as e:  # BrokenPipeError: nobody reads the other end
        log.warning("the supervisor is gone (%s); stopping this worker", e)
        orphaned()
    finally:
        try:
            os.write(fd, f"calls {client.calls_done}\n".encode())  # the final count, when stopped
        except OSError:
            pass
        if not keep_fd():
            os.close(fd)
