"""Logging, configured once by the composition root: JSON lines or a readable console,
on stderr and optionally in a rotated file.

Delivery lines carry their facts as fields, passed with `extra=`:
`notify_id`, `attempt`, `queue`, `status_code`, `latency_ms` (and
`dispatcher_id`, `lease_id`, `reason` where known). JSON puts them in the
document; the console appends them as key=value.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time

FIELDS = ("notify_id", "attempt", "queue", "status_code", "latency_ms", "dispatcher_id", "lease_id", "reason")
FILE_MAX_BYTES = 100 << 20
FILE_BACKUPS = 5
# Libraries whose DEBUG is their own plumbing (event loop, HTTP/2 frames, gRPC polling):
# they stay at INFO when NotifyAgent's level is DEBUG.
NOISY = ("asyncio", "grpc", "grpc._cython", "hpack", "aiohttp.access", "aiosmtplib", "mail.log", "urllib3")


def fields_of(record: logging.LogRecord) -> dict:
    return {name: getattr(record, name) for name in FIELDS if getattr(record, name, None) is not None}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **fields_of(record),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = fields_of(record)
        if extra and "notify_id" in extra and extra["notify_id"] in record.getMessage():
            extra.pop("notify_id")  # already in the message text
        return line + "".join(f" {k}={v}" for k, v in extra.items())


def configure(fmt: str = "console", level: str = "INFO", file: str = "") -> None:
    """Replaces the root handlers; safe to call again (SIGHUP)."""
    formatter = JsonFormatter() if fmt == "json" else ConsoleFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if file:
        handlers.append(logging.handlers.RotatingFileHandler(file, maxBytes=FILE_MAX_BYTES, backupCount=FILE_BACKUPS,
                                                             encoding="utf-8"))  # fmt: skip
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    for h in handlers:
        h.setFormatter(formatter)
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    for name in NOISY:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level) if name != "aiohttp.access" else logging.WARNING)
