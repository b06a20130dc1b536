"""The admin in a real browser (Playwright driving Debian's Chromium, no browser download):
log in, open the sandbox chat, create a pairing code and follow its "open in sandbox chat"
link, pair with ``/start <code>``, say hello and see a real worker's echo appear.

A screenshot of each step lands in ``var/screenshots/`` (CI keeps ``var/`` as artifacts).
PostgreSQL pass only (live server, worker processes); without Chromium it is skipped, unless
``BROWSER_REQUIRED=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import io
import os
import re
import signal
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command

from agents.models import RuntimeConfig
from workers.models import Worker
from workers.providers.local import process_alive

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"
TIMEOUT_MS = 60_000
WORKER_COMMAND = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "run_worker"]


@pytest.fixture
def chromium_path() -> Path:
    """Checked before anything is started: a skip (or, in CI, a failure) costs nothing."""
    if not CHROMIUM.exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
        if os.environ.get("BROWSER_REQUIRED") == "1":
            pytest.fail(message + "; BROWSER_REQUIRED=1")
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
def chromium(chromium_path):
    """Started after ``system`` (and so stopped before it): no ORM call may run under
    Playwright's event loop, or Django would give it a connection nobody closes."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def system(live_server, settings, monkeypatch, tmp_path):
    """The live server as the whole system: its sandbox Telegram, local worker processes
    (the echo handler) calling back to it. Every worker is stopped afterwards."""
    sandbox = f"{live_server.url}/sandbox/telegram"
    settings.TELEGRAM_API_BASE_URL = sandbox
    settings.PUBLIC_BASE_URL = live_server.url
    settings.AGENT_FACTORY_WORKER_API_URL = live_server.url
    settings.AGENT_FACTORY_LOCAL_TERM_GRACE_SECONDS = 5.0
    settings.AGENT_FACTORY_LOCAL_DATA_ROOT = str(tmp_path / "workers")
    monkeypatch.setenv("TELEGRAM_API_BASE_URL", sandbox)
    monkeypatch.setenv("AGENT_FACTORY_WORKER_HANDLER", "echo")
    settings.AGENT_FACTORY_LOCAL_WORKER_COMMAND = [*WORKER_COMMAND, "--poll-seconds", "0.2"]
    config = RuntimeConfig.get()
    config.provider_kind = "local"
    config.max_workers = 2
    config.save()
    # The demo agent and its sandbox bot, as the main job creates them (getMe and setWebhook
    # go to the live server's sandbox).
    call_command("setup_sandbox_demo", stdout=io.StringIO())
    get_user_model().objects.create_superuser("boss", "boss@example.com", "browser-pass-1")
    yield live_server
    for worker in Worker.objects.exclude(process_id=None):
        if process_alive(worker.process_id, worker.worker_id):
            os.killpg(worker.process_id, signal.SIGKILL)


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"sandbox-chat-{name}.png"), full_page=True)


def test_pair_and_chat_in_the_browser(chromium_path, system, chromium):
    from playwright.sync_api import expect

    base = system.url
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # 1. Log in to the admin.
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "browser-pass-1")
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text("boss")
    shot(page, "1-logged-in")

    # 2. The sandbox chat, opened directly: the demo bot is picked, nothing said yet.
    page.goto(f"{base}/admin/telegram/sandboxmessage/chat/")
    expect(page.locator("#sandbox-bot")).to_contain_text("sandbox_1000001_bot")
    expect(page.locator("#sandbox-transcript li")).to_have_count(0)
    shot(page, "2-chat-opened")

    # 3. A pairing code on the agent's onboarding page, and its sandbox link.
    page.goto(f"{base}/admin/telegram/bot/")
    page.click("text=open")  # the bot's onboarding page
    expect(page.locator("h1")).to_contain_text("Onboard Telegram for demo")
    page.fill("#id_consumer_user_id", "consumer-browser")
    page.click("input[value='Create pairing code']")
    link = page.locator("#open-in-sandbox-chat")
    expect(link).to_be_visible()
    code = re.search(r"Code (\w+),", page.locator("#content-main").inner_text()).group(1)
    shot(page, "3-pairing-code")

    # 4. Follow the link: the composer holds /start <code>; sending pairs this user.
    link.click()
    expect(page.locator("#sandbox-text")).to_have_value(f"/start {code}")
    page.click("#sandbox-send")
    user_bubble = page.locator("#sandbox-transcript li.user").first
    expect(user_bubble).to_contain_text(f"/start {code}")
    expect(user_bubble).to_contain_text("webhook 200 paired")
    expect(page.locator("#sandbox-transcript li.bot").first).to_contain_text("You are paired")
    shot(page, "4-paired")
    # The binding, seen in the admin. (No ORM here: under Playwright's event loop Django
    # would hand this thread a connection of its own that nobody closes.)
    bindings = context.new_page()  # same session
    bindings.goto(f"{base}/admin/telegram/identitybinding/?q=consumer-browser")
    row = bindings.locator("#result_list tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("424242")
    expect(row).to_contain_text("active")
    bindings.close()

    # 5. Say hello: a worker process is spawned, runs the echo handler, and its reply appears
    # without reloading the page.
    page.fill("#sandbox-text", "hello from the browser")
    page.press("#sandbox-text", "Enter")
    expect(page.locator("#sandbox-transcript li.user").nth(1)).to_contain_text("enqueued")
    echo = page.locator("#sandbox-transcript li.bot", has_text="hello from the browser")
    expect(echo).to_have_count(1, timeout=TIMEOUT_MS)
    shot(page, "5-echo-reply")

    # The transcript survives a reload (both sides are stored).
    page.reload()
    expect(page.locator("#sandbox-transcript li")).to_have_count(4)
    assert errors == []
    context.close()  # stop polling before the live server stops

