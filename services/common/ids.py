"""Identifiers sortable by creation time (ULID layout: 48-bit ms time + 80 random bits)."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # 10 bits -> 2 characters


class IdGenerator:
    """Makes 26-character ids that sort by creation time, strictly increasing per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._last_rand = 0
        self._time_ms = -1
        self._time_text = ""

    def new(self, now_ms: int | None = None) -> str:
        ms = int(time.time() * 1000) if now_ms is None else now_ms
        with self._lock:
            if ms <= self._last_ms:
                ms = self._last_ms
                rand = self._last_rand + 1
            else:
                rand = int.from_bytes(os.urandom(10), "big") >> 1  # room to count up
            self._last_ms, self._last_rand = ms, rand
            if ms != self._time_ms:  # the time part: 10 characters, once per millisecond
                self._time_ms, self._time_text = ms, "".join(_ALPHABET[(ms >> shift) & 31] for shift in range(45, -1, -5))
            prefix = self._time_text
        # the random part: 80 bits are 16 characters, 10 bits (2 characters) per lookup
        p = _PAIRS
        return (prefix + p[rand >> 70 & 1023] + p[rand >> 60 & 1023] + p[rand >> 50 & 1023] + p[rand >> 40 & 1023]
                + p[rand >> 30 & 1023] + p[rand >> 20 & 1023] + p[rand >> 10 & 1023] + p[rand & 1023])  # fmt: skip
