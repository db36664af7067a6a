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
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
PARTITION_BITS = 10
MAX_PARTITIONS = 1 << PARTITION_BITS  # 1024


class IdGenerator:
    """Makes 26-character ids that sort by creation time, strictly increasing per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._last_rand = 0

    def new(self, now_ms: int | None = None, *, partition: int = 0) -> str:
        ms = int(time.time() * 1000) if now_ms is None else now_ms
        with self._lock:
            if ms <= self._last_ms:
                ms = self._last_ms
                rand = self._last_rand + 1
            else:
                rand = int.from_bytes(os.urandom(9), "big") >> 3  # 69 bits: room to count up
            self._last_ms, self._last_rand = ms, rand
        low = ((rand & ((1 << 70) - 1)) << PARTITION_BITS) | (partition % MAX_PARTITIONS)
        value = (ms << 80) | low
        return "".join(_ALPHABET[(value >> shift) & 31] for shift in range(125, -1, -5))


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
