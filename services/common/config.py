"""Settings: one frozen dataclass, filled from flags, NOTIFY_* variables and a
TOML file, in that order of precedence, and checked once. Every field's
flag, variable and help come from the same declaration."""

from __future__ import annotations

import argparse
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it and says what is accepted."""


class StartupError(ConfigError):
    """A process cannot start as configured: a port in use, a store or registry that does not
    answer. One line naming the setting; the CLI prints it and exits 2."""


def _opt(default: Any, help: str, *, env: str | None = None, roles: str = "all") -> Any:
    return field(default=default, metadata={"help": help, "env": env, "roles": roles})


LOOPBACK = "127.0.0.0/8,::1/128"
DEFAULT_ADDR = "127.0.0.1:50051"  # NOTIFY_GRPC_ADDR: where the scheduler serves and clients connect
# Below the file, env and flags. Each role its own HTTP port, so a scheduler and a
# dispatcher on one host do not collide.
ROLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "dev": {"allow_networks": LOOPBACK},
    "dispatcher": {"http_addr": "127.0.0.1:8081"},
}


@dataclass(frozen=True)
class Settings:
    grpc_addr: str = _opt(DEFAULT_ADDR, "gRPC address the scheduler serves (clients connect here)", roles="scheduler")
    http_addr: str = _opt("127.0.0.1:8080", "HTTP address: the scheduler's /v1 HTTP/JSON API, /metrics and /healthz (a dispatcher's default is 127.0.0.1:8081); empty turns it off")
    store: str = _opt("sqlite:///notifyagent.db", "sqlite:///relative.db, sqlite:////abs.db (?synchronous=NORMAL) or postgresql://...", roles="scheduler")
    registry: str = _opt("memory", "memory, static:host:port,... or consul://host:port")
    allow_networks: str = _opt("", "CIDRs opened to delivery despite the SSRF guard (dev opens loopback)", roles="dispatcher")
    log_format: str = _opt("console", "console or json")
    log_level: str = _opt("INFO", "DEBUG, INFO, WARNING or ERROR")
    log_file: str = _opt("", "also write the logs to this file, rotated at 100 MiB keeping 5 (empty: stderr only)")
    capacity: int = _opt(256, "calls one dispatcher makes at once", roles="dispatcher")
    processes: int = _opt(1, "dispatcher worker processes under one supervising parent", roles="dispatcher")
    recycle_calls: int = _opt(0, "recycle a dispatcher worker after this many calls (0: never)", roles="dispatcher")
    recycle_memory_mb: int = _opt(0, "recycle a dispatcher worker above this resident memory (0: never)", roles="dispatcher")
    recycle_seconds: float = _opt(0.0, "recycle a dispatcher worker after it ran this long (0: never)", roles="dispatcher")
    recycle_idle_seconds: float = _opt(0.0, "recycle a dispatcher worker that made no call for this long (0: never)", roles="dispatcher")
    queues: str = _opt("", "queue limits: name:max_concurrent=N:rate=R:burst=B,... (TOML: [queues.name] tables)", roles="scheduler")
    event_loop: str = _opt("auto", "auto (uvloop where installed, else asyncio), uvloop or asyncio")
    grace: float = _opt(30.0, "seconds to finish work in flight on SIGTERM/SIGINT")
    horizon: float = _opt(300.0, "seconds ahead the scheduler holds due notifies in memory", roles="scheduler")
    lease_margin: float = _opt(5.0, "seconds a lease outlives its attempt timeout before it expires", roles="scheduler")
    max_body_bytes: int = _opt(1 << 20, "largest request body accepted", roles="scheduler")
    max_in_memory: int = _opt(100_000, "notifies the scheduler holds in memory (one each, plus one per 4 KiB of request); beyond it due work waits in the store", roles="scheduler")
    max_message_bytes: int = _opt(16 << 20, "largest gRPC message sent or accepted (scheduler, dispatchers and CLI alike)")
    signing_secret: str = _opt("", "whsec_... secret: sign outgoing calls per Standard Webhooks", roles="dispatcher")
    service_name: str = _opt("notifyagent-scheduler", "name the scheduler registers under and dispatchers look up")
    advertise_addr: str = _opt("", "host:port dispatchers should dial (default: the bound gRPC address)", roles="scheduler")
    alerts: str = _opt("", "alert channels for notifies that end FAILED: webhook:URL, wecom:URL, slack:URL, mail:smtp://host:port?to=a@x,...", roles="scheduler")
    alert_interval: float = _opt(60.0, "seconds alerts are grouped for: at most one message per channel per interval", roles="scheduler")
    partitions: int = _opt(16, "partitions of the store, fixed when it is created (schedulers share them on PostgreSQL)", roles="scheduler")
    ownership_ttl: float = _opt(5.0, "seconds a scheduler's partition ownership lasts unless renewed (PostgreSQL)", roles="scheduler")
    reconnect_grace: float = _opt(5.0, "seconds a dropped dispatcher stream's leases wait for it to reconnect", roles="scheduler")
    config: str = _opt("", "TOML file with any of these settings (keys as the field names)")
    tokens_file: str = _opt("", "file of `NAME SCOPES sha256:HEX` lines: turns on bearer tokens (re-read on SIGHUP)")
    token: str = _opt("", "bearer token this process sends to the scheduler (dispatchers; the CLI reads NOTIFY_TOKEN)")
    insecure: bool = _opt(False, "without NOTIFY_TOKENS_FILE, allow listening on a non-loopback address", roles="scheduler")
    metrics_auth: bool = _opt(False, "/metrics on the HTTP port requires a token with scope read or admin")
    tls_cert: str = _opt("", "PEM certificate: the gRPC and HTTP ports serve TLS; clients present it under mTLS")
    tls_key: str = _opt("", "PEM private key of NOTIFY_TLS_CERT")
    tls_ca: str = _opt("", "PEM CA bundle clients verify the scheduler with (turns TLS on for clients)")
    tls_client_ca: str = _opt("", "PEM CA bundle: the ports require client certificates signed by it (mTLS)")
    secret_headers: str = _opt("", "more header names whose values are secret (Authorization, Proxy-Authorization, Cookie, X-Api-Key always are)", roles="scheduler")
    secret_key: str = _opt("", "comma-separated keys (32 random bytes, URL-safe base64), newest first: secret header values encrypted at rest", roles="scheduler")
    dispatcher_max_streams: int = _opt(64, "Lease streams one dispatcher identity (token) may hold at once", roles="scheduler")
    dispatcher_max_credit: int = _opt(16384, "calls one dispatcher identity (token) may hold at once over all its streams", roles="scheduler")

    def check(self) -> "Settings":
        if self.log_format not in ("console", "json"):
            raise ConfigError(f"NOTIFY_LOG_FORMAT must be console or json, not {self.log_format!r}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"NOTIFY_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {self.log_level!r}")
        if self.processes < 1 or self.recycle_calls < 0 or self.recycle_memory_mb < 0:
            raise ConfigError("NOTIFY_PROCESSES must be >= 1; NOTIFY_RECYCLE_CALLS and NOTIFY_RECYCLE_MEMORY_MB >= 0")
        if self.recycle_seconds < 0 or self.recycle_idle_seconds < 0:
            raise ConfigError("NOTIFY_RECYCLE_SECONDS and NOTIFY_RECYCLE_IDLE_SECONDS must be >= 0 (0: never)")
        if not 0.1 <= self.alert_interval <= 86400:
            raise ConfigError(f"NOTIFY_ALERT_INTERVAL must be between 0.1 and 86400 seconds, not {self.alert_interval}")
        if self.event_loop not in ("auto", "asyncio", "uvloop"):
            raise ConfigError(f"NOTIFY_EVENT_LOOP must be auto, asyncio or uvloop, not {self.event_loop!r}")
        if self.capacity < 1:
            raise ConfigError(f"NOTIFY_CAPACITY must be at least 1, not {self.capacity}")
        if self.grace < 0 or self.horizon < 1:
            raise ConfigError("NOTIFY_GRACE must be >= 0 and NOTIFY_HORIZON >= 1 (seconds)")
        if self.max_body_bytes < 1 or self.lease_margin < 0:
            raise ConfigError("NOTIFY_MAX_BODY_BYTES must be >= 1 and NOTIFY_LEASE_MARGIN >= 0 (seconds)")
        if not self.service_name.strip():
            raise ConfigError("NOTIFY_SERVICE_NAME must not be empty")
        if self.max_in_memory < 100:
            raise ConfigError(f"NOTIFY_MAX_IN_MEMORY must be at least 100, not {self.max_in_memory}")
        if self.max_message_bytes < self.max_body_bytes + (256 << 10):
            raise ConfigError("NOTIFY_MAX_MESSAGE_BYTES must be at least NOTIFY_MAX_BODY_BYTES + 262144 (room for"
                              f" one notify per grant), not {self.max_message_bytes}")  # fmt: skip
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("NOTIFY_TLS_CERT and NOTIFY_TLS_KEY go together: set both or neither")
        if self.tls_client_ca and not self.tls_cert:
            raise ConfigError("NOTIFY_TLS_CLIENT_CA (mTLS) needs NOTIFY_TLS_CERT and NOTIFY_TLS_KEY")
        if self.metrics_auth and not self.tokens_file:
            raise ConfigError("NOTIFY_METRICS_AUTH needs NOTIFY_TOKENS_FILE (the tokens it checks)")
        if self.dispatcher_max_streams < 1 or self.dispatcher_max_credit < 1:
            raise ConfigError("NOTIFY_DISPATCHER_MAX_STREAMS and NOTIFY_DISPATCHER_MAX_CREDIT must be at least 1")
        if not 1 <= self.partitions <= 1024:
            raise ConfigError(f"NOTIFY_PARTITIONS must be between 1 and 1024, not {self.partitions}")
        if self.ownership_ttl < 1 or self.reconnect_grace < 0:
            raise ConfigError("NOTIFY_OWNERSHIP_TTL must be >= 1 and NOTIFY_RECONNECT_GRACE >= 0 (seconds)")
        split_addr(self.grpc_addr, "NOTIFY_GRPC_ADDR")
        if self.http_addr:
            split_addr(self.http_addr, "NOTIFY_HTTP_ADDR")
        if self.advertise_addr:
            split_addr(self.advertise_addr, "NOTIFY_ADVERTISE_ADDR")
        return self


def env_name(name: str) -> str:
    return f"NOTIFY_{name.upper()}"


def split_addr(addr: str, setting: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{setting} must be host:port (port 0-65535), not {addr!r}")
    return host.strip("[]"), int(port)


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def add_flags(parser: argparse.ArgumentParser, role: str, defaults: Mapping[str, Any] | None = None) -> None:
    """Adds --grpc-addr and friends, only those the role uses; unset flags stay None so lower
    layers show through. defaults: the role's own defaults, shown in the help."""
    for f in fields(Settings):
        if f.metadata["roles"] not in ("all", role) and role != "dev":
            continue
        default = (defaults or {}).get(f.name, f.default)
        parser.add_argument(
            f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
            type=parse_bool if isinstance(f.default, bool) else type(f.default),
            help=f"{f.metadata['help']} [{env_name(f.name)}; default {default!r}]",
        )  # fmt: skip


def load(flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Builds Settings: overrides (code defaults of a subcommand) < file < environment < flags."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = dict(overrides)
    path = flags.get("config") or environ.get("NOTIFY_CONFIG") or ""
    if path:
        try:
            doc = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read config file {path} (NOTIFY_CONFIG / --config): {e}") from e
        values.update(doc.get("notifyagent", doc))
    known = {f.name: f for f in fields(Settings)}
    for name, f in known.items():
        raw = environ.get(env_name(name))
        if raw is not None:
            values[name] = raw
    values.update(flags)
    if isinstance(values.get("queues"), dict):  # TOML: [queues.name] tables
        values["queues"] = ",".join(
            ":".join([name, *(f"{k}={v}" for k, v in limits.items())]) for name, limits in values["queues"].items()
        )
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}; see `notifyagent --help`")
    for name, value in list(values.items()):
        kind = type(known[name].default)
        try:
            values[name] = parse_bool(value) if kind is bool else kind(value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{env_name(name)} must be {kind.__name__}, not {value!r}") from e
    return replace(Settings(), **values).check()


def settings_table() -> str:
    """The README's configuration table, from the declarations."""
    rows = ["| variable | flag | default | meaning |", "| --- | --- | --- | --- |"]
    for f in fields(Settings):
        rows.append(f"| `{env_name(f.name)}` | `--{f.name.replace('_', '-')}` | `{f.default!r}` | {f.metadata['help']} |")
    return "\n".join(rows)
