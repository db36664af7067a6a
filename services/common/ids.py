"""Identifiers sortable by creation time (ULID layout: 48-bit ms time + 80 random bits).

The last 10 bits (the id's 25th and 26th characters) carry the partition the
notify belongs to: `partition_of(id, P)` is those bits modulo P, so ids made
before partitions existed still fall into one of the P partitions. The stores
compute the same in SQL (a character outside the alphabet, or a missing one,
counts as 0)."""

from __future__ import annotations

import os
import threading
import time
import zlib

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # 10 bits -> 2 characters
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
PARTITION_BITS = 10
MAX_PARTITIONS = 1 << PARTITION_BITS  # 1024


class IdGenerator:
    """Makes 26-character ids that sort by creation time, strictly increasing per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._last_rand = 0
        self._time_ms = -1
        self._time_text = ""

    def new(self, now_ms: int | None = None, *, partition: int = 0) -> str:
        ms = int(time.time() * 1000) if now_ms is None else now_ms
        with self._lock:
            if ms <= self._last_ms:
                ms = self._last_ms
                rand = self._last_rand + 1
            else:
                rand = int.from_bytes(os.urandom(9), "big") >> 3  # 69 bits: room to count up
            self._last_ms, self._last_rand = ms, rand
            if ms != self._time_ms:  # the time part: 10 characters, once per millisecond
                self._time_ms, self._time_text = ms, "".join(_ALPHABET[(ms >> shift) & 31] for shift in range(45, -1, -5))
            prefix = self._time_text
        low = ((rand & ((1 << 70) - 1)) << PARTITION_BITS) | (partition % MAX_PARTITIONS)
        # the low 80 bits are 16 characters, 10 bits (2 characters) per lookup
        p = _PAIRS
        return (prefix + p[low >> 70 & 1023] + p[low >> 60 & 1023] + p[low >> 50 & 1023] + p[low >> 40 & 1023]
                + p[low >> 30 & 1023] + p[low >> 20 & 1023] + p[low >> 10 & 1023] + p[low & 1023])  # fmt: skip


def partition_of(notify_id: str, partitions: int) -> int:
    """The partition an id belongs to (any string: unknown characters count as 0)."""
    if partitions <= 1:
        return 0
    return id_tail(notify_id) % partitions


def id_tail(notify_id: str) -> int:
    """The id's last 10 bits: characters 25 and 26 in base32."""
    return _INDEX.get(notify_id[24:25], 0) * 32 + _INDEX.get(notify_id[25:26], 0)


def partition_for_key(ordering_key: str, partitions: int) -> int:
    """The partition an ordering key's notifies go to (stable across processes and versions)."""
    return zlib.crc32(ordering_key.encode()) % partitions if partitions > 1 else 0
