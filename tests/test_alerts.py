"""Alerts for notifies that end FAILED: one grouped message per channel per interval, on a
webhook (JSON), a WeCom robot (markdown), Slack (text) and mail (a local SMTP server)."""

import asyncio
import json
import time

import pytest
from aiosmtpd.smtp import SMTP

from notifyagent.common.config import ConfigError
from notifyagent.scheduler.alerts import ALERT_QUEUE, MAX_LISTED, parse_channels
from notifyagent.v1 import notify_pb2 as pb, notify_service_pb2 as api
from support import System, fast_retry, settings_for


class Mailbox:
    """A local SMTP server (aiosmtpd) that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return "250 OK"

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: SMTP(self, hostname="127.0.0.1"), "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def mailbox():
    box = Mailbox()
    box.port = await box.start()
    yield box
    await box.stop()


async def wait_count(get, count, timeout=15.0):
    deadline = time.monotonic() + timeout
    while len(get()) < count:
        assert time.monotonic() < deadline, f"{len(get())} of {count}"
        await asyncio.sleep(0.05)


async def test_failures_raise_one_grouped_message_per_channel_per_interval(tmp_path, target, mailbox):
    alerts = (f"webhook:{target.url('/alert')},wecom:{target.url('/wecom')},slack:{target.url('/slack')},"
              f"mail:smtp://127.0.0.1:{mailbox.port}?to=ops@example.com,oncall@example.com")  # fmt: skip
    system = System(settings_for(tmp_path, alerts=alerts, alert_interval=1.5))
    await system.start()
    target.respond("/fail", 404)
    alert_paths = ("/alert", "/wecom", "/slack")
    of = lambda path: [r for r in target.received if r.path == path]  # noqa: E731
    try:
        ok = await system.create(target.url("/ok"))
        failed = await system.create(target.url("/fail?token=secret"), retry=fast_retry(max_attempts=3))
        await system.wait_state(ok.id, pb.STATE_SUCCEEDED)
        await system.wait_state(failed.id, pb.STATE_FAILED)
        for path in alert_paths:
            await wait_count(lambda: of(path), 1)
        await wait_count(lambda: mailbox.messages, 1)
        doc = json.loads(of("/alert")[0].body)
        assert doc["type"] == "notify.failed" and doc["count"] == 1
        (item,) = doc["notifies"]
        assert item["id"] == failed.id and item["attempts"] == 1 and item["last_status_code"] == 404
        assert item["url"] == f"http://127.0.0.1:{target.port}/fail", "no query string: it may carry tokens"
        assert item["last_error"] == "HTTP 404"
        wecom = json.loads(of("/wecom")[0].body)
        assert wecom["msgtype"] == "markdown" and failed.id in wecom["markdown"]["content"]
        assert failed.id in json.loads(of("/slack")[0].body)["text"]
        mail = mailbox.messages[0]
        assert sorted(mail.rcpt_tos) == ["oncall@example.com", "ops@example.com"]
        assert failed.id in mail.content.decode() and "1 notify FAILED" in mail.content.decode()

        reqs = [api.CreateNotifyRequest(notify=pb.Notify(request=pb.HttpRequest(url=target.url("/fail")), retry=fast_retry(1)))
                for _ in range(100)]  # fmt: skip
        batch = (await system.api.BatchCreateNotify(api.BatchCreateNotifyRequest(requests=reqs))).notifies
        for n in batch:
            await system.wait_state(n.id, pb.STATE_FAILED)
        for path in alert_paths:
            await wait_count(lambda: of(path), 2)
        await wait_count(lambda: mailbox.messages, 2)
        await asyncio.sleep(2.0)  # a second message for the same failures would come within an interval
        assert [len(of(p)) for p in alert_paths] == [2, 2, 2] and len(mailbox.messages) == 2
        doc = json.loads(of("/alert")[1].body)
        assert doc["count"] == 100 and len(doc["notifies"]) == MAX_LISTED and doc["omitted"] == 100 - MAX_LISTED
        assert {i["id"] for i in doc["notifies"]} <= {n.id for n in batch}
        assert "100 notifies FAILED" in mailbox.messages[1].content.decode()
        listed = await system.api.ListNotifies(api.ListNotifiesRequest(queue=ALERT_QUEUE))
        assert len(listed.notifies) == 6 and all(n.state == pb.STATE_SUCCEEDED for n in listed.notifies), \
            "HTTP alerts are notifies in their own queue"
    finally:
        await system.stop()


async def test_a_failing_alert_endpoint_raises_no_alert_about_itself(tmp_path, target):
    target.respond("/alert", 404)
    target.respond("/fail", 404)
    system = System(settings_for(tmp_path, alerts=f"webhook:{target.url('/alert')}", alert_interval=0.5))
    await system.start()
    try:
        n = await system.create(target.url("/fail"))
        await system.wait_state(n.id, pb.STATE_FAILED)
        await asyncio.sleep(2.0)
        assert len([r for r in target.received if r.path == "/alert"]) == 1
    finally:
        await system.stop()


async def test_an_open_window_is_committed_on_a_graceful_stop_and_sent_after_the_restart(tmp_path, target):
    target.respond("/fail", 404)
    settings = settings_for(tmp_path, alerts=f"webhook:{target.url('/alert')}", alert_interval=3.0)
    system = System(settings)
    await system.start()
    n = await system.create(target.url("/fail"))
    await system.wait_state(n.id, pb.STATE_FAILED)
    await system.stop()
    assert [r for r in target.received if r.path == "/alert"] == []
    again = System(settings)
    await again.start()
    try:
        await wait_count(lambda: [r for r in target.received if r.path == "/alert"], 1)
        assert json.loads(target.received[-1].body)["notifies"][0]["id"] == n.id
    finally:
        await again.stop()


def test_alert_channels_are_parsed_and_bad_ones_named():
    chans = parse_channels("webhook:https://h/x, mail:smtp://u:p@mx:2525?to=a@x,b@y,slack:https://hooks.slack.com/T")
    assert [c.kind for c in chans] == ["webhook", "mail", "slack"]
    assert chans[1].url == "smtp://u:p@mx:2525?to=a@x,b@y" and "u:p" not in chans[1].name
    for bad in ("pager:https://x", "webhook:ftp://x", "mail:smtp://mx", "mail:smtp://mx?to=nobody", "wecom:",
                "webhook:https://x/" + "a" * 3000, ",".join(["slack:https://x"] * 17), "mail:smtp://mx:99999?to=a@x"):
        with pytest.raises(ConfigError) as e:
            parse_channels(bad)
        assert str(e.value).startswith("NOTIFY_ALERTS") and "u:p" not in str(e.value)


def test_alert_channel_parsing_fuzz_gives_channels_or_a_config_error():
    import random

    rnd = random.Random(7)
    alphabet = "webhook:mailsmtp/?=@,.:wecomslack" + "".join(chr(c) for c in range(0, 0x80, 7))
    for _ in range(500):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 80)))
        try:
            chans = parse_channels(text)
        except ConfigError:
            continue
        assert all(c.kind in ("webhook", "wecom", "slack", "mail") for c in chans)
