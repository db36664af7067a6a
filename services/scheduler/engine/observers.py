"""Who hears about notifies as they are created, attempted and end.

Metrics and alerts subscribe here instead of reaching into the engine. Hooks
run on the engine's loop right after the fact is committed, must not block,
and cannot break the engine: an exception is logged and the next hook runs.
"""

from __future__ import annotations

import logging
from typing import Callable

from .model import AttemptRecord, Notification

log = logging.getLogger(__name__)

Created = Callable[[int], None]  # how many notifies one create committed
Attempted = Callable[[Notification, AttemptRecord, int], None]  # the notify, its attempt, the time it was due
Finished = Callable[[Notification, AttemptRecord | None, str], None]  # the notify (final state), last attempt, reason


class Observers:
    def __init__(self) -> None:
        self.created: list[Created] = []
        self.attempted: list[Attempted] = []
        self.finished: list[Finished] = []

    def emit(self, hooks: list, *args) -> None:
        for hook in hooks:
            try:
                hook(*args)
            except Exception:
                log.exception("an observer of the engine failed (%r); going on", hook)
