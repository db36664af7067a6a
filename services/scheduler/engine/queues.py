"""Named queues: pause, max concurrent deliveries and a token-bucket rate limit.

Limits are global: with several schedulers sharing a store, each enforces its
share (`set_share(n)`: max concurrent and burst divided by n, rounded up; rate
divided by n), n being the number of live schedulers."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InvalidArgument
from .model import QueueConfig
from .validate import check_queue


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens per second
    burst: float
    tokens: float
    last_ms: int

    def _refill(self, now_ms: int) -> None:
        if now_ms > self.last_ms:
            self.tokens = min(self.burst, self.tokens + (now_ms - self.last_ms) * self.rate / 1000)
            self.last_ms = now_ms

    def ready(self, now_ms: int) -> bool:
        self._refill(now_ms)
        return self.tokens >= 1

    def take(self, now_ms: int) -> None:
        self._refill(now_ms)
        self.tokens -= 1

    def ms_until_token(self, now_ms: int) -> int:
        self._refill(now_ms)
        return 0 if self.tokens >= 1 else int((1 - self.tokens) * 1000 / self.rate) + 1


class Queues:
    """The limits of every queue; queues never configured are unlimited."""

    def __init__(self) -> None:
        self._configs: dict[str, QueueConfig] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._share = 1  # live schedulers the limits are divided among

    def config(self, name: str) -> QueueConfig:
        return self._configs.get(name) or QueueConfig(name)

    def configs(self) -> list[QueueConfig]:
        return [self._configs[n] for n in sorted(self._configs)]

    def configure(self, cfg: QueueConfig, now_ms: int) -> None:
        check(cfg)
        old = self._configs.get(cfg.name)
        self._configs[cfg.name] = cfg
        if cfg.rate <= 0:
            self._buckets.pop(cfg.name, None)
        elif old is None or (old.rate, old.burst) != (cfg.rate, cfg.burst) or cfg.name not in self._buckets:
            self._buckets[cfg.name] = self._bucket(cfg, now_ms)

    def _bucket(self, cfg: QueueConfig, now_ms: int) -> TokenBucket:
        rate = cfg.rate / self._share
        burst = float(math.ceil(cfg.burst / self._share) if cfg.burst else max(1.0, rate))
        return TokenBucket(rate, burst, burst, now_ms)

    def set_share(self, share: int, now_ms: int) -> bool:
        """Enforces 1/share of every limit from now on; True if that changed anything."""
        share = max(1, share)
        if share == self._share:
            return False
        self._share = share
        for name, cfg in self._configs.items():
            if cfg.rate > 0:
                self._buckets[name] = self._bucket(cfg, now_ms)
        return True

    def allowed(self, name: str, in_flight: int, now_ms: int) -> bool:
        cfg = self._configs.get(name)
        if cfg is None:
            return True
        if cfg.paused or (cfg.max_concurrent and in_flight >= math.ceil(cfg.max_concurrent / self._share)):
            return False
        bucket = self._buckets.get(name)
        return bucket is None or bucket.ready(now_ms)

    def on_grant(self, name: str, now_ms: int) -> None:
        bucket = self._buckets.get(name)
        if bucket is not None:
            bucket.take(now_ms)

    def ms_until_token(self, names: list[str], now_ms: int) -> int | None:
        """The soonest a rate-limited queue among names gets a token, if any is waiting on one."""
        waits = [
            b.ms_until_token(now_ms)
            for n in names
            if (b := self._buckets.get(n)) is not None and not self._configs[n].paused
        ]
        waits = [w for w in waits if w > 0]
        return min(waits) if waits else None


def check(cfg: QueueConfig) -> None:
    """Raises InvalidArgument for a bad name or limit (the bounds live in validate)."""
    check_queue(cfg)


def parse(text: str) -> list[QueueConfig]:
    """NOTIFY_QUEUES: `name:max_concurrent=N:rate=R:burst=B,...` (every key optional)."""
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, *pairs = item.split(":")
        values: dict[str, float] = {}
        for pair in pairs:
            key, _, raw = pair.partition("=")
            if key not in ("max_concurrent", "rate", "burst") or not raw:
                raise ValueError(f"NOTIFY_QUEUES: {pair!r} in {item!r}; use max_concurrent=N, rate=R or burst=B")
            try:
                values[key] = float(raw)
            except ValueError:
                raise ValueError(f"NOTIFY_QUEUES: {key} must be a number, not {raw!r}") from None
        cfg = QueueConfig(name.strip(), int(values.get("max_concurrent", 0)), values.get("rate", 0.0), int(values.get("burst", 0)))
        try:
            check(cfg)
        except InvalidArgument as e:
            raise ValueError(f"NOTIFY_QUEUES: queue {name!r}: {e}") from None
        out.append(cfg)
    return out
