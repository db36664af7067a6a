"""Alerts: notifies that end FAILED are reported to operators, grouped.

`NOTIFY_ALERTS` lists channels: `webhook:URL` (JSON), `wecom:URL` (a WeCom
group robot, markdown), `slack:URL` (an incoming webhook, text) and
`mail:smtp://[user:pass@]host:port?to=a@x,b@y` (`smtps://` for TLS from the
start; `from=` sets the sender). The first failure opens a window of
`NOTIFY_ALERT_INTERVAL` seconds; when it closes, every channel gets one
message listing the failures of the window (the first MAX_LISTED of them, and
how many there were). So a channel hears at most once per interval.

Alerts over HTTP travel as notifies in the `alerts` queue: committed, retried
and recorded like any other (failures in that queue raise no alert, so a dead
alert endpoint cannot feed itself). Mail is sent directly, with a few retries.
What a window holds lives in memory until the window closes; on a graceful
stop it is committed at once (HTTP alerts keep their planned time), but a
crash loses the open window.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Awaitable, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential_jitter

from ..common.config import ConfigError
from .engine.model import AttemptRecord, Notification, Request, Spec, State

log = logging.getLogger(__name__)
ALERT_QUEUE = "alerts"
KINDS = ("webhook", "wecom", "slack", "mail")
MAX_CHANNELS = 16
MAX_URL = 2048
MAX_LISTED = 50  # failures named in one message; the count covers the rest
MAX_ERROR = 200
MAIL_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Channel:
    kind: str  # webhook, wecom, slack, mail
    url: str  # the HTTP endpoint, or the smtp:// URL

    @property
    def name(self) -> str:
        return f"{self.kind}:{_without_secrets(self.url)}"


@dataclass(frozen=True, slots=True)
class Failure:
    id: str
    url: str  # without query string or credentials: they often carry tokens
    queue: str
    attempts: int
    last_status_code: int
    last_error: str
    at_ms: int


def parse_channels(text: str) -> list[Channel]:
    """NOTIFY_ALERTS -> channels; a comma that does not start a new `kind:` belongs to the
    one before (mail's `to=a@x,b@y`)."""
    parts: list[str] = []
    for token in text.split(","):
        if not token.strip():
            continue
        if token.strip().split(":", 1)[0] in KINDS or not parts:
            parts.append(token.strip())
        else:
            parts[-1] += "," + token.strip()
    if len(parts) > MAX_CHANNELS:
        raise ConfigError(f"NOTIFY_ALERTS: at most {MAX_CHANNELS} channels, not {len(parts)}")
    channels = []
    for part in parts:
        kind, sep, url = part.partition(":")
        if kind not in KINDS or not sep:
            raise ConfigError(f"NOTIFY_ALERTS: {part[:80]!r} must start with webhook:, wecom:, slack: or mail:")
        if len(url) > MAX_URL:
            raise ConfigError(f"NOTIFY_ALERTS: the {kind} URL is longer than {MAX_URL} characters")
        try:
            u = urlsplit(url)
            u.port
        except ValueError as e:
            raise ConfigError(f"NOTIFY_ALERTS: the {kind} URL cannot be parsed ({e})") from None
        if kind == "mail":
            if u.scheme not in ("smtp", "smtps") or not u.hostname:
                raise ConfigError(f"NOTIFY_ALERTS: mail must be mail:smtp://[user:pass@]host:port?to=a@x,b@y, not {_without_secrets(url)!r}")
            to = _recipients(url)
            if not to or not all("@" in a for a in to):
                raise ConfigError(f"NOTIFY_ALERTS: mail needs ?to=a@x,b@y (addresses with @) in {_without_secrets(url)!r}")
        elif u.scheme not in ("http", "https") or not u.hostname:
            raise ConfigError(f"NOTIFY_ALERTS: {kind} needs an http:// or https:// URL, not {_without_secrets(url)!r}")
        channels.append(Channel(kind, url))
    return channels


def _recipients(url: str) -> list[str]:
    return [a.strip() for v in parse_qs(urlsplit(url).query).get("to", []) for a in v.split(",") if a.strip()]


def _without_secrets(url: str) -> str:
    """scheme://host:port/path: no credentials, no query (tokens often ride there)."""
    try:
        u = urlsplit(url)
        host, port = u.hostname or "", u.port
    except ValueError:
        return "<unparsable URL>"
    return f"{u.scheme}://{host}{f':{port}' if port else ''}{u.path}"


class Alerter:
    """Hears every notify that ends (an engine observer) and sends grouped alerts."""

    def __init__(
        self, *, channels: list[Channel], interval_s: float, enqueue: Callable[[list[Spec]], Awaitable[object]],
        send_mail: Callable[..., Awaitable[object]] | None = None,
    ) -> None:  # fmt: skip
        self.channels = channels
        self.interval_s = interval_s
        self._enqueue = enqueue
        self._send_mail = send_mail or _send_mail
        self._listed: list[Failure] = []
        self._count = 0
        self._opened_ms: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self.sent: dict[str, int] = {c.kind: 0 for c in channels}  # messages sent (or committed) per kind
        self.host = socket.gethostname()

    def finished(self, n: Notification, last: AttemptRecord | None, reason: str) -> None:
        if n.state != State.FAILED or n.spec.queue == ALERT_QUEUE or not self.channels:
            return
        now_ms = int(time.time() * 1000)
        self._count += 1
        if len(self._listed) < MAX_LISTED:
            self._listed.append(Failure(
                id=n.id, url=_without_secrets(n.spec.request.url), queue=n.spec.queue, attempts=n.attempt_count,
                last_status_code=last.status_code if last else 0,
                last_error=((last.error if last else "") or reason)[:MAX_ERROR], at_ms=now_ms,
            ))  # fmt: skip
        if self._opened_ms is None:
            self._opened_ms = now_ms
            self._timer = asyncio.get_running_loop().call_later(self.interval_s, self._close_window)

    def _close_window(self) -> None:
        self._timer = None
        task = asyncio.create_task(self.flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self, *, at_ms: int | None = None) -> None:
        """Sends the window's message on every channel; HTTP ones as notifies due at_ms (None: now)."""
        if self._opened_ms is None:
            return
        listed, count, opened = self._listed, self._count, self._opened_ms
        self._listed, self._count, self._opened_ms = [], 0, None
        doc = {
            "type": "notify.failed", "count": count, "notifies": [_failure_doc(f) for f in listed],
            "omitted": count - len(listed), "window_start_ms": opened, "interval_s": self.interval_s,
            "scheduler": f"{self.host} pid {os.getpid()}",
        }  # fmt: skip
        specs = [_http_spec(c, doc, at_ms) for c in self.channels if c.kind != "mail"]
        try:
            if specs:
                await self._enqueue(specs)
                for c in self.channels:
                    if c.kind != "mail":
                        self.sent[c.kind] += 1
        except Exception as e:
            log.error("alert for %d failed notifies could not be committed: %s", count, e)
        for c in self.channels:
            if c.kind == "mail":
                try:
                    await self._send_mail(c.url, _subject(doc), _text(doc))
                    self.sent["mail"] += 1
                except Exception as e:  # the alert is lost for this channel; say so where operators look
                    log.error("alert mail via %s failed: %s", c.name, e)
        log.warning("alert: %d notifies FAILED since %s; told %s", count,
                    time.strftime("%H:%M:%S", time.gmtime(opened / 1000)), ", ".join(c.name for c in self.channels))  # fmt: skip

    async def stop(self) -> None:
        """Commits what the open window holds (HTTP alerts keep their planned time). Idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            await self.flush(at_ms=int((self._opened_ms or 0) + self.interval_s * 1000))
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _failure_doc(f: Failure) -> dict:
    return {"id": f.id, "url": f.url, "queue": f.queue, "attempts": f.attempts,
            "last_status_code": f.last_status_code, "last_error": f.last_error, "time_ms": f.at_ms}  # fmt: skip


def _subject(doc: dict) -> str:
    return f"NotifyAgent: {doc['count']} notif{'y' if doc['count'] == 1 else 'ies'} FAILED ({doc['scheduler']})"


def _line(f: dict) -> str:
    last = f"HTTP {f['last_status_code']}" if f["last_status_code"] else f["last_error"]
    return f"{f['id']} {f['url']} [{f['queue']}]: {f['attempts']} attempts, last {last}"


def _text(doc: dict) -> str:
    lines = [_subject(doc), ""] + [_line(f) for f in doc["notifies"]]
    if doc["omitted"]:
        lines.append(f"... and {doc['omitted']} more")
    return "\n".join(lines) + "\n"


def _http_spec(c: Channel, doc: dict, at_ms: int | None) -> Spec:
    if c.kind == "webhook":
        body = doc
    elif c.kind == "wecom":  # https://developer.work.weixin.qq.com/document/path/91770 (markdown, at most 4096 bytes)
        lines = [f"**{_subject(doc)}**"] + [f"> `{f['id']}` {f['url']}: <font color=\"warning\">{f['attempts']} attempts, "
                                              f"last {('HTTP ' + str(f['last_status_code'])) if f['last_status_code'] else f['last_error']}</font>"
                                              for f in doc["notifies"]]  # fmt: skip
        if doc["omitted"]:
            lines.append(f"... and {doc['omitted']} more")
        content = "\n".join(lines)
        while len(content.encode()) > 4000:
            content = content[: len(content) * 3 // 4]
        body = {"msgtype": "markdown", "markdown": {"content": content}}
    else:  # slack incoming webhook: {"text": ...} with mrkdwn
        lines = [f"*{_subject(doc)}*"] + [f"• `{f['id']}` {_line(f).split(' ', 1)[1]}" for f in doc["notifies"]]
        if doc["omitted"]:
            lines.append(f"… and {doc['omitted']} more")
        body = {"text": "\n".join(lines)}
    return Spec(
        request=Request(method="POST", url=c.url, json_body=json.dumps(body, ensure_ascii=False, separators=(",", ":"))),
        deliver_at_ms=at_ms, queue=ALERT_QUEUE, labels={"alert": "notify.failed", "channel": c.kind},
    )  # fmt: skip


async def _send_mail(url: str, subject: str, text: str) -> None:
    import aiosmtplib  # only deployments with a mail channel need it loaded

    u = urlsplit(url)
    params = parse_qs(u.query)
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = params.get("from", [f"notifyagent@{socket.gethostname()}"])[0]
    msg["To"] = ", ".join(_recipients(url))
    msg.set_content(text)
    tls = u.scheme == "smtps"
    async for attempt in AsyncRetrying(stop=stop_after_attempt(3), wait=wait_exponential_jitter(multiplier=0.5, max=5), reraise=True):
        with attempt:
            await aiosmtplib.send(
                msg, hostname=u.hostname, port=u.port or (465 if tls else 25), use_tls=tls,
                username=unquote(u.username) if u.username else None, password=unquote(u.password) if u.password else None,
                timeout=MAIL_TIMEOUT_S,
            )  # fmt: skip
