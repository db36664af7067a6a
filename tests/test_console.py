"""The web console in a real browser: Debian's chromium driven by Playwright.

The system runs for real (scheduler and dispatcher on free ports, a real aiohttp
target); the browser loads the console from NOTIFY_HTTP_ADDR and uses it as an
operator would. A screenshot of each page lands in the test's tmp_path; with
NOTIFY_SCREENSHOT_DIR set (e.g. to docs), there too."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Page, async_playwright, expect

from google.rpc import code_pb2

from notifyagent.common.web import OpsServer
from notifyagent.scheduler.api import console
from notifyagent.scheduler.api.http import ApiError, HttpApi
from notifyagent.scheduler.api.servicer import AdminServicer, NotifyServicer
from notifyagent.scheduler.engine.operations import Operations
from notifyagent.v1 import admin_service_pb2 as admin_pb, notify_pb2 as pb, notify_service_pb2 as api
from support import System, Trust, fast_retry, settings_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
UI_TIMEOUT_MS = 15_000
expect.set_options(timeout=UI_TIMEOUT_MS)


def need_chromium() -> None:
    if os.path.exists(CHROMIUM):
        return
    reason = f"Debian's chromium is not installed at {CHROMIUM} (apt-get install -y chromium; .ci/run does it)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
async def console_system(tmp_path, request):
    """The system the console talks to; `indirect=True` with param "tokens" turns real auth on (s.trust)."""
    trust = Trust.make(tmp_path) if getattr(request, "param", None) == "tokens" else None
    settings = (trust.settings if trust else settings_for)(tmp_path, http_addr="127.0.0.1:0")
    s = System(settings, token=trust.tokens["tests"] if trust else "")
    s.trust = trust
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
def problems() -> list[str]:
    """Script errors and console errors of the page: any left at the end fails the test."""
    return []


@pytest.fixture
async def page(console_system, problems):
    """A chromium page; fails the test on any script error or console error (a CSP violation, say)."""
    need_chromium()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1360, "height": 720})
            context.set_default_timeout(UI_TIMEOUT_MS)
            pg = await context.new_page()
            pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text} {m.location}") if m.type == "error" else None)
            yield pg
        finally:
            await browser.close()
    assert problems == []


def base_url(system: System) -> str:
    return f"http://{system.scheduler.http_address}"


async def screenshot(page: Page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    await page.screenshot(path=str(path), full_page=True)
    if os.environ.get("NOTIFY_SCREENSHOT_DIR"):
        shutil.copy(path, Path(os.environ["NOTIFY_SCREENSHOT_DIR"]) / name)
    return path


async def test_console_finds_a_failed_notify_shows_its_attempts_and_retry_delivers_it(console_system, target, page, tmp_path):
    system = console_system
    target.respond("/orders", 500)
    request = pb.HttpRequest(method=pb.HTTP_METHOD_POST, url=target.url("/orders"), headers={"X-Shop": "north"},
                             json_body='{"order": 42, "paid": true}')  # fmt: skip
    failed = await system.create("", request=request, retry=fast_retry(max_attempts=2), labels={"order": "42"},
                                 group_key="order-42")  # fmt: skip
    hostile = "<img src=x onerror=alert(1)>"
    other = await system.create(target.url("/orders"), retry=fast_retry(max_attempts=1), labels={"order": "43", "note": hostile})
    await system.create(target.url("/later"), queue="billing", trigger_key="month-end")
    await system.wait_state(failed.id, pb.STATE_FAILED)

    await page.goto(base_url(system) + "/")
    await expect(page.locator('[data-count="FAILED"] .value')).to_have_text("2")
    await expect(page.locator('[data-count="WAITING_TRIGGER"] .value')).to_have_text("1")
    await expect(page.locator('#queues tr[data-queue="billing"]')).to_be_visible()
    dispatcher = system.dispatchers[0]
    row = page.locator("#dispatchers tbody tr")
    await expect(row).to_have_count(1)
    await expect(row.locator("td").nth(2)).to_have_text(str(dispatcher.settings.capacity))
    await expect(page.locator("#rates .value").first).not_to_have_text("…")  # a rate needs two samples
    await screenshot(page, tmp_path, "console-overview.png")

    await page.click('nav a[data-nav="notifies"]')
    await page.select_option("#search-state", "STATE_FAILED")
    await page.click('#search button[type="submit"]')
    rows = page.locator("#notifies > tbody > tr")
    await expect(rows).to_have_count(2)
    await expect(page.locator(f'tr[data-id="{other.id}"]')).to_contain_text(f"note={hostile}")  # text, not markup
    await page.fill("#search-group_key", "order-42")
    await page.fill("#search-label", "order=42")
    await page.click('#search button[type="submit"]')
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-id", failed.id)

    await rows.first.locator("a").click()
    await expect(page.locator("#notify-id")).to_have_text(failed.id)
    await expect(page.locator("#notify-state")).to_have_text("FAILED")
    attempts = page.locator("#attempts > tbody > tr")
    await expect(attempts).to_have_count(2)
    await expect(attempts.locator("td.status")).to_have_text(["500", "500"])
    await expect(attempts.first.locator("pre.snippet")).to_have_text("answer 500")
    await attempts.first.locator("details summary").click()  # the answer's headers, as the attempt kept them
    await expect(attempts.first.locator("details table")).to_contain_text("Content-Type")
    await expect(page.locator("pre.body")).to_have_text('{"order": 42, "paid": true}')
    await expect(page.get_by_role("link", name="order-42")).to_have_attribute("href", "#/notifies?group_key=order-42")

    target.respond("/orders", 200)
    await page.click("#retry")
    await expect(page.locator("#notify-state")).to_have_text("SUCCEEDED")
    await expect(attempts).to_have_count(3)
    await expect(attempts.nth(2).locator("td.status")).to_have_text("200")
    await expect(page.locator("#retry")).to_be_disabled()
    assert (await system.get(failed.id)).state == pb.STATE_SUCCEEDED
    assert target.ids().count(failed.id) == 3
    await screenshot(page, tmp_path, "console.png")


async def test_console_searches_by_trigger_key_pages_and_pauses_and_resumes_a_queue(console_system, page):
    system = console_system
    request = pb.HttpRequest(method=pb.HTTP_METHOD_POST, url="http://127.0.0.1:9/never")
    batch = [api.CreateNotifyRequest(notify=pb.Notify(request=request, queue="mail", trigger_key="never")) for _ in range(51)]
    await system.api.BatchCreateNotify(api.BatchCreateNotifyRequest(requests=batch))

    async def paused() -> bool:
        status = await system.admin.GetStatus(admin_pb.GetStatusRequest())
        return next(q.paused for q in status.queues if q.name == "mail")

    await page.goto(base_url(system) + "/#/notifies")
    await page.fill("#search-trigger_key", "never")
    await page.click('#search button[type="submit"]')
    await expect(page.locator("#notifies > tbody > tr")).to_have_count(50)  # a page
    await page.click("#next-page")
    await expect(page.locator("#notifies > tbody > tr")).to_have_count(1)
    await expect(page.locator("#next-page")).to_have_count(0)
    await page.fill("#search-trigger_key", "other")
    await page.click('#search button[type="submit"]')
    await expect(page.locator("#no-results")).to_be_visible()

    await page.click('nav a[data-nav="overview"]')
    mail = page.locator('#queues tr[data-queue="mail"]')
    await mail.get_by_role("button", name="Pause").click()
    await expect(mail.locator(".badge.paused")).to_have_text("PAUSED")
    assert await paused()
    await mail.get_by_role("button", name="Resume").click()
    await expect(mail.locator(".badge.paused")).to_have_count(0)
    assert not await paused()

    await system.admin.DrainDispatchers(admin_pb.DrainDispatchersRequest())
    await expect(page.locator("#dispatchers tbody tr .badge")).to_have_text("DRAINING")


async def test_console_redrives_every_failed_notify_of_a_queue(console_system, target, page):
    system = console_system
    target.respond("/gone", 404)
    ids = [(await system.create(target.url("/gone"), queue="hooks")).id for _ in range(3)]
    other = await system.create(target.url("/gone"), queue="elsewhere")
    for i in [*ids, other.id]:
        await system.wait_state(i, pb.STATE_FAILED)
    target.respond("/gone", 200)

    page.on("dialog", lambda d: d.accept())
    await page.goto(base_url(system) + "/#/notifies?state=STATE_FAILED&queue=hooks")
    await expect(page.locator("#notifies > tbody > tr")).to_have_count(3)
    await page.click("#redrive")
    await expect(page.locator("#message")).to_have_text("Redrive: 3 failed notifies sent again")
    for i in ids:
        await system.wait_state(i, pb.STATE_SUCCEEDED)
    assert (await system.get(other.id)).state == pb.STATE_FAILED

    await page.click('nav a[data-nav="notifies"]')
    await page.fill("#search-id", other.id)
    await page.click('#search button[type="submit"]')
    await expect(page.locator("#notify-state")).to_have_text("FAILED")
    await expect(page.locator("#notify-url")).to_have_text(f"POST {target.url('/gone')}")


async def test_console_asks_for_a_token_keeps_it_in_the_tab_and_sends_it_as_bearer(console_system, page, problems):
    """The real API routes with an authorize hook that wants one token (the console's side of NOTIFY_TOKENS_FILE)."""
    engine = console_system.scheduler.engine
    seen: list[tuple[str, str]] = []

    async def authorize(method: str, metadata) -> None:
        token = dict(metadata).get("authorization", "")
        seen.append((method, token))
        if token != "Bearer s3cret":
            raise ApiError.of(code_pb2.UNAUTHENTICATED, "a valid token is required")

    operations = Operations(engine, console_system.scheduler.store)
    http_api = HttpApi(notify=NotifyServicer(operations), admin=AdminServicer(engine), authorize=authorize)

    def routes(app) -> None:
        http_api.install(app)
        console.install(app)

    ops = OpsServer("127.0.0.1:0", healthy=lambda: True, collect=lambda: [], extend=routes)
    await ops.start()
    try:
        await page.goto(f"http://127.0.0.1:{ops.port}/")
        await expect(page.locator("#token-form")).to_be_visible()
        await expect(page.locator("#message")).to_contain_text("This server requires a token")
        await page.fill("#token", "wrong")
        await page.click('#token-form button[type="submit"]')
        await expect(page.locator("#message")).to_contain_text("The token was refused (UNAUTHENTICATED")
        await page.fill("#token", "s3cret")
        await page.click('#token-form button[type="submit"]')
        await expect(page.locator('[data-count="FAILED"] .value')).to_have_text("0")
        await expect(page.locator("#token-form")).to_be_hidden()
        assert await page.evaluate("sessionStorage.getItem('notifyagent.token')") == "s3cret"
        assert ("/notifyagent.v1.AdminService/GetStatus", "Bearer s3cret") in seen

        await page.click("#forget-token")
        await expect(page.locator("#token-form")).to_be_visible()
        assert await page.evaluate("sessionStorage.getItem('notifyagent.token')") is None

        await page.fill("#token", "s3cret")
        await page.click('#token-form button[type="submit"]')
        await expect(page.locator("#token-form")).to_be_hidden()
        await ops.stop()
        await expect(page.locator("#message")).to_contain_text("cannot reach the scheduler")
    finally:
        await ops.stop()
    refused = [p for p in problems if "status of 401" in p]
    assert len(refused) == 3  # the first visit, the wrong token, the forgotten one: each refused once
    gone = [p for p in problems if "ERR_CONNECTION_REFUSED" in p]
    assert gone
    problems[:] = [p for p in problems if p not in refused + gone]


@pytest.mark.parametrize("console_system", ["tokens"], indirect=True)
async def test_console_under_real_tokens_reads_with_read_and_acts_only_with_client(console_system, target, page, problems):
    """NOTIFY_TOKENS_FILE on: a `read` token searches and views but its Retry is refused (403); a `client` one retries."""
    system, tokens = console_system, console_system.trust.tokens
    target.respond("/orders", 500)
    failed = await system.create(target.url("/orders"), retry=fast_retry(max_attempts=1), labels={"order": "7"})
    await system.wait_state(failed.id, pb.STATE_FAILED)
    message, state, attempts = page.locator("#message"), page.locator("#notify-state"), page.locator("#attempts > tbody > tr")

    await page.goto(base_url(system) + "/")
    await expect(message).to_contain_text("This server requires a token")
    await page.fill("#token", tokens["read"])
    await page.click('#token-form button[type="submit"]')
    await expect(message).to_contain_text("PERMISSION_DENIED: token 'read' (read) may not call /notifyagent.v1.AdminService/GetStatus")

    await page.click('nav a[data-nav="notifies"]')  # read may search and view
    await page.fill("#search-label", "order=7")
    await page.click('#search button[type="submit"]')
    rows = page.locator("#notifies > tbody > tr")
    await expect(rows).to_have_count(1)
    await rows.first.locator("a").click()
    await expect(state).to_have_text("FAILED")
    target.respond("/orders", 200)
    await page.click("#retry")
    await expect(message).to_contain_text("Retry failed: PERMISSION_DENIED: token 'read' (read) may not call "
                                          "/notifyagent.v1.NotifyService/RetryNotify; it needs one of admin, client")  # fmt: skip
    await expect(page.locator("#token-form")).to_be_hidden()
    assert (await system.get(failed.id)).state == pb.STATE_FAILED

    await page.click("#forget-token")
    await expect(page.locator("#token-form")).to_be_visible()
    await page.fill("#token", tokens["client"])
    await page.click('#token-form button[type="submit"]')
    await expect(state).to_have_text("FAILED")
    await page.click("#retry")
    await expect(message).to_have_text(f"Sent {failed.id} again")
    await expect(state).to_have_text("SUCCEEDED")
    await expect(attempts.locator("td.status")).to_have_text(["500", "200"])
    assert (await system.get(failed.id)).state == pb.STATE_SUCCEEDED
    assert [(r.method, r.path) for r in target.received] == [("POST", "/orders")] * 2 and target.ids() == [failed.id] * 2

    refused = [p for p in problems if "status of 401" in p or "status of 403" in p]
    assert any("status of 403" in p and ":retry" in p for p in refused)
    problems[:] = [p for p in problems if p not in refused]


async def test_console_files_are_served_with_a_strict_content_security_policy(console_system):
    async with aiohttp.ClientSession() as http:
        files = [("/", "text/html"), ("/console/console.css", "text/css")]
        files += [(f"/console/{m}.js", "text/javascript") for m in ("console", "api", "util", "overview", "search", "notify")]
        for path, kind in files:
            async with http.get(base_url(console_system) + path) as resp:
                assert resp.status == 200 and resp.content_type == kind
                assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
        async with http.get(base_url(console_system) + "/console/../pyproject.toml") as resp:
            assert resp.status == 404

