"""The admin's own pages in a real browser (Playwright driving Debian's Chromium), the steps of
issue 14's proof that the sandbox chat test does not walk:

- an agent created with the admin's add form, its sandbox token imported and its webhook
  configured on the onboarding page, a pairing code, pairing and a hello in the sandbox chat,
  the echo reply, then the conversation page with both turns and the reply's outbox row, and
  "send as the agent" confirmed and delivered through the outbox;
- the soft reset: its dry-run preview, then the confirmed apply;
- the Fly cleanup: its dry-run preview, then the confirmed run, against a fake Fly API served
  on 127.0.0.1 (a stateful HTTP server: what was destroyed is gone on the next listing);
- a view-only staff user: the same pages, without one button that changes anything.

A screenshot of each step lands in ``var/screenshots/admin-*.png``. PostgreSQL pass only (live
server, worker processes); skipped without Chromium unless ``BROWSER_REQUIRED=1``.
"""

from __future__ import annotations

import re
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from agents.models import AgentProfile, RuntimeConfig
from telegram.models import IdentityBinding, PairingCode

# The browser, the live system and its cleanup: the sandbox chat test's fixtures, shared.
from tests.e2e import test_browser_sandbox_chat as chat_test
from tests.fakes.http import send_json

chromium_path = chat_test.chromium_path
chromium = chat_test.chromium
system = chat_test.system
SCREENSHOTS, TIMEOUT_MS = chat_test.SCREENSHOTS, chat_test.TIMEOUT_MS

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PASSWORD = "browser-pass-1"
FLY_APP = "af-browser-workers"
FLY_TOKEN = "fly-browser-token-1"


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"admin-{name}.png"), full_page=True)


def open_page(browser, base: str, username: str):
    """A fresh session logged in as ``username``; page errors are collected on it."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text(username)
    return context, page


@pytest.fixture
def legacy_rows(system):
    """What the soft reset is about: a binding and a pending code from before bot identities
    (made before the browser starts: no ORM under Playwright's event loop)."""
    demo = AgentProfile.objects.get(agent_key="demo")
    IdentityBinding.objects.create(
        consumer_user_id="legacy-user",
        agent=demo,
        conversation_id="legacy-conversation",
        bot_identity=None,
        source="telegram_pairing",
        telegram_user_id="555",
        telegram_chat_id="555",
    )
    PairingCode.objects.create(
        code="LEGACY0001",
        consumer_user_id="legacy-code-user",
        agent=demo,
        bot_identity="",
        expires_at=timezone.now() + timedelta(hours=1),
    )


def test_agent_onboarding_chat_conversation_and_soft_reset(
    chromium_path, system, legacy_rows, chromium
):
    from playwright.sync_api import expect

    base = system.url
    context, page = open_page(chromium, base, "boss")
    shot(page, "1-logged-in")

    # 1. A new agent, with the admin's add form.
    page.goto(f"{base}/admin/agents/agentprofile/add/")
    page.fill("#id_agent_key", "browser")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("browser")
    row = page.locator("#result_list tbody tr", has_text="browser").filter(has_not_text="demo")
    expect(row).to_have_count(1)
    shot(page, "2-agent-created")

    # 2. Its onboarding page: import a sandbox token (verified with the sandbox's getMe).
    row.get_by_role("link", name="onboarding").click()
    expect(page.locator("h1")).to_contain_text("Onboard Telegram for browser")
    page.fill("#id_token", "2000002:browser-sandbox-token")
    page.click("input[value='Import and verify']")
    expect(page.locator(".messagelist")).to_contain_text("Token verified: @sandbox_2000002_bot")
    expect(page.locator("#content-main")).to_contain_text("Bot @sandbox_2000002_bot")
    shot(page, "3-token-imported")

    # 3. The webhook, set on the sandbox (which answers getWebhookInfo: verified).
    page.click("input[value='Configure webhook']")
    expect(page.locator(".messagelist")).to_contain_text(
        f"Webhook set to {base}/telegram/webhook/2000002"
    )
    expect(page.locator("#content-main")).to_contain_text("— verified")
    shot(page, "4-webhook-configured")

    # 4. A pairing code, and its "open in sandbox chat" link to this agent's bot.
    page.fill("#id_consumer_user_id", "consumer-admin")
    page.click("input[value='Create pairing code']")
    link = page.locator("#open-in-sandbox-chat")
    expect(link).to_be_visible()
    code = re.search(r"Code (\w+),", page.locator("#content-main").inner_text()).group(1)
    shot(page, "5-pairing-code")
    link.click()
    expect(page.locator("#sandbox-bot")).to_contain_text("sandbox_2000002_bot")
    expect(page.locator("#sandbox-text")).to_have_value(f"/start {code}")

    # 5. Pair, say hello, see the worker's echo.
    page.click("#sandbox-send")
    expect(page.locator("#sandbox-transcript li.user").first).to_contain_text("webhook 200 paired")
    expect(page.locator("#sandbox-transcript li.bot").first).to_contain_text("You are paired")
    page.fill("#sandbox-text", "hello from the admin test")
    page.press("#sandbox-text", "Enter")
    echo = page.locator("#sandbox-transcript li.bot", has_text="hello from the admin test")
    expect(echo).to_have_count(1, timeout=TIMEOUT_MS)
    shot(page, "6-echo-reply")

    # 6. The conversation page, reached from the binding's row: both turns, as a chat.
    page.goto(f"{base}/admin/telegram/identitybinding/?q=consumer-admin")
    binding = page.locator("#result_list tbody tr")
    expect(binding).to_have_count(1)
    expect(binding).to_contain_text("2000002")
    binding.locator("td.field-conversation_link a").click()
    chat = page.locator("#conversation-chat")
    expect(chat.locator(".af-turn.user", has_text="hello from the admin test")).to_have_count(1)
    expect(chat.locator(".af-turn.assistant", has_text="hello from the admin test")).to_have_count(
        1
    )
    expect(page.locator("#conversation-jobs tbody tr")).to_have_count(1)
    # The job's reply as the outbox row the server sent (SPEC §22), with Telegram's id.
    reply_row = page.locator("#conversation-jobs .af-outbox.sent")
    expect(reply_row).to_have_count(1)
    expect(reply_row).to_contain_text("reply sent ×1")
    expect(reply_row).to_contain_text("tg ")
    shot(page, "7-conversation")
    # Send as the agent: a confirmation page, then an outbox row the sender delivers to the
    # (sandbox) chat, listed with who sent it.
    page.fill("#send-as-agent textarea[name=text]", "an operator says hi")
    page.click("#send-as-agent input[type=submit]")
    expect(page.locator("blockquote")).to_contain_text("an operator says hi")
    page.click("input[value='Yes, send it']")
    operator_row = page.locator("#operator-messages tbody tr")
    expect(operator_row).to_have_count(1)
    expect(operator_row).to_contain_text("boss")
    expect(operator_row).to_contain_text("sent")
    expect(chat.locator(".af-turn.assistant", has_text="an operator says hi")).to_have_count(1)
    shot(page, "7b-sent-as-agent")

    # 7. Soft reset from the bindings list: the preview changes nothing...
    page.goto(f"{base}/admin/telegram/identitybinding/?has_bot=no")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    page.locator("#result_list tbody tr input.action-select").check()
    page.select_option("select[name=action]", "soft_reset")
    page.click("button[name=index]")
    expect(page.locator("h1")).to_contain_text("Soft-reset legacy Telegram bindings")
    preview = page.locator("#content table")
    expect(preview.locator("tr", has_text="revoked_bindings")).to_contain_text("1")
    expect(preview.locator("tr", has_text="expired_pairings")).to_contain_text("1")
    expect(preview.locator("tr", has_text="applied")).to_contain_text("False")
    shot(page, "8-soft-reset-preview")
    check = context.new_page()
    check.goto(f"{base}/admin/telegram/identitybinding/?has_bot=no")
    expect(check.locator("#result_list tbody tr")).to_contain_text("active")
    check.close()

    # ... the confirmation applies it: the legacy binding and code go, the new pairing stays.
    page.click("input[value='Apply soft reset']")
    message = page.locator(".messagelist")
    expect(message).to_contain_text("Soft reset applied")
    expect(message).to_contain_text("'revoked_bindings': 1")
    expect(message).to_contain_text("'expired_pairings': 1")
    page.goto(f"{base}/admin/telegram/identitybinding/?has_bot=no")
    expect(page.locator("#result_list tbody tr")).to_contain_text("revoked")
    page.goto(f"{base}/admin/telegram/identitybinding/?q=consumer-admin")
    expect(page.locator("#result_list tbody tr")).to_contain_text("active")
    page.goto(f"{base}/admin/telegram/pairingcode/?q=LEGACY0001")
    expect(page.locator("#result_list tbody tr")).to_contain_text("expired")
    shot(page, "9-soft-reset-applied")

    assert page.errors == []
    context.close()  # stop the chat's polling before the live server stops


class FakeFly:
    """The few Machines API calls the cleanup makes, on 127.0.0.1, with state: destroyed
    machines and volumes are gone from the next listing. Every call is recorded."""

    def __init__(self, machines: list[str], volumes: list[str]):
        self.machines, self.volumes, self.calls = list(machines), list(volumes), []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                parts = urlsplit(self.path)
                fake.calls.append(f"{self.command} {parts.path}")
                if self.headers.get("Authorization") != f"Bearer {FLY_TOKEN}":
                    return send_json(self, 401, {"error": "unauthorized"})
                status, body = fake.route(self.command, parts.path.split("/"))
                send_json(self, status, body)

            do_GET = do_POST = do_DELETE = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def route(self, method: str, parts: list[str]):
        # parts: ["", "v1", "apps", app, ...]
        if parts[1:3] != ["v1", "apps"] or len(parts) < 4 or parts[3] != FLY_APP:
            return 404, {"error": "not found"}
        rest = parts[4:]
        if method == "GET" and rest == []:
            return 200, {"name": FLY_APP}
        if method == "GET" and rest == ["machines"]:
            return 200, [{"id": m, "state": "started"} for m in self.machines]
        if method == "GET" and rest == ["volumes"]:
            return 200, [{"id": v} for v in self.volumes]
        if rest[:1] == ["machines"] and len(rest) >= 2 and rest[1] in self.machines:
            if method == "DELETE" and len(rest) == 2:
                self.machines.remove(rest[1])
            return 200, {}
        if method == "DELETE" and rest[:1] == ["volumes"] and rest[1:] and rest[1] in self.volumes:
            self.volumes.remove(rest[1])
            return 200, {}
        return 404, {"error": "not found"}

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_fly(live_server, settings):
    fly = FakeFly(machines=["m_browser_1", "m_browser_2"], volumes=["vol_browser_1"])
    settings.FLY_API_BASE_URL = fly.url
    settings.FLY_API_TOKEN = FLY_TOKEN
    RuntimeConfig.get()
    RuntimeConfig.objects.filter(pk=1).update(provider_kind="fly", app_name=FLY_APP)
    get_user_model().objects.create_superuser("boss", "boss@example.com", PASSWORD)
    make_viewer()
    fly.live_url = live_server.url
    yield fly
    fly.stop()


def make_viewer():
    """A staff user with every view permission and nothing else."""
    viewer = get_user_model().objects.create_user("viewer", "viewer@example.com", PASSWORD)
    viewer.is_staff = True
    viewer.save()
    viewer.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    return viewer


def test_fly_cleanup_preview_then_confirm(chromium_path, fake_fly, chromium):
    from playwright.sync_api import expect

    base = fake_fly.live_url
    context, page = open_page(chromium, base, "boss")

    # The preview, from the cleanup history's button: a dry run that lists, destroys nothing.
    page.goto(f"{base}/admin/fly/flycleanuprun/")
    page.click("text=Run cleanup (preview first)")
    expect(page.locator("h1")).to_contain_text(f"Destroy every machine and volume of {FLY_APP}?")
    content = page.locator("#content")
    expect(content).to_contain_text("Dry run")
    expect(content).to_contain_text("Machines (2): m_browser_1, m_browser_2")
    expect(content).to_contain_text("Volumes (1): vol_browser_1")
    shot(page, "fly-1-preview")
    assert all(call.startswith("GET ") for call in fake_fly.calls), fake_fly.calls
    assert fake_fly.machines == ["m_browser_1", "m_browser_2"]

    # Confirmed: every machine is cordoned, stopped, destroyed; then the volume; the run is
    # reported, audited and listed in the history.
    page.click("input[value='Yes, destroy them']")
    expect(page.locator(".messagelist")).to_contain_text(
        f"Cleanup of {FLY_APP}: 2 machine(s), 1 volume(s) destroyed; 0 error(s)."
    )
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("#result_list tbody tr")).to_contain_text(
        "machines 2/2 deleted, volumes 1/1 deleted, 0 error(s)"
    )
    shot(page, "fly-2-applied")
    assert fake_fly.machines == [] and fake_fly.volumes == []
    app = f"/v1/apps/{FLY_APP}"
    for machine in ("m_browser_1", "m_browser_2"):
        assert f"POST {app}/machines/{machine}/cordon" in fake_fly.calls
        assert f"DELETE {app}/machines/{machine}" in fake_fly.calls
    assert f"DELETE {app}/volumes/vol_browser_1" in fake_fly.calls

    # A view-only user may preview (it only lists) but is offered no button to apply.
    viewer_context, viewer = open_page(chromium, base, "viewer")
    viewer.goto(f"{base}/admin/fly/flycleanuprun/run/")
    expect(viewer.locator("#content")).to_contain_text("Dry run")
    expect(viewer.locator("input[type=submit]")).to_have_count(0)
    expect(viewer.locator("#content")).to_contain_text("needs the “Can run Fly cleanup”")
    shot(viewer, "fly-3-viewer-preview")

    assert page.errors == [] and viewer.errors == []
    context.close()
    viewer_context.close()


@pytest.fixture
def viewed_rows(system):
    """Something on every page the viewer opens (an empty list shows no action bar anyway):
    the demo agent and bot, a pending code, a binding and its conversation, and the viewer."""
    from agents.models import Conversation

    demo = AgentProfile.objects.get(agent_key="demo")
    PairingCode.objects.create(
        code="VIEWCODE01",
        consumer_user_id="viewed-code-user",
        agent=demo,
        bot_identity="1000001",
        expires_at=timezone.now() + timedelta(hours=1),
    )
    Conversation.objects.create(conversation_id="viewed-conversation", agent=demo)
    IdentityBinding.objects.create(
        consumer_user_id="viewed-user",
        agent=demo,
        conversation_id="viewed-conversation",
        bot_identity="1000001",
        source="telegram_pairing",
        telegram_user_id="777",
        telegram_chat_id="777",
    )
    make_viewer()
    return {"demo_pk": demo.pk}


# Each page, and what on it would change something: seen by the superuser (so the check is
# not vacuous), absent for the view-only user.
CHANGING_CONTROLS = [
    ("index", "/admin/", "a.addlink"),
    ("agents", "/admin/agents/agentprofile/", ".object-tools a.addlink"),
    ("agents", "/admin/agents/agentprofile/", "select[name=action]"),
    ("agents", "/admin/agents/agentprofile/", "button[name=index]"),
    ("agent", "/admin/agents/agentprofile/{demo_pk}/change/", "input[name=_save]"),
    ("bots", "/admin/telegram/bot/", "select[name=action]"),
    ("codes", "/admin/telegram/pairingcode/", "select[name=action]"),
    ("bindings", "/admin/telegram/identitybinding/", "select[name=action]"),
    ("bindings", "/admin/telegram/identitybinding/", "button[name=index]"),
    ("onboarding", "/admin/telegram/bot/onboarding/{demo_pk}/", "#content-main input[type=submit]"),
    (
        "conversation",
        "/admin/telegram/identitybinding/conversation/viewed-conversation/",
        "#send-as-agent",
    ),
    ("sandbox-chat", "/admin/telegram/sandboxmessage/chat/", "#sandbox-send"),
]


def test_view_only_staff_sees_no_action_buttons(chromium_path, system, viewed_rows, chromium):
    from playwright.sync_api import expect

    base = system.url
    boss_context, boss = open_page(chromium, base, "boss")
    viewer_context, viewer = open_page(chromium, base, "viewer")
    seen = set()
    for name, path, selector in CHANGING_CONTROLS:
        url = base + path.format(**viewed_rows)
        boss.goto(url)
        assert boss.locator(selector).count() > 0, f"the superuser sees no {selector} on {name}"
        response = viewer.goto(url)
        assert response.status == 200, f"{name}: {response.status}"
        expect(viewer.locator("#content")).to_be_visible()
        expect(viewer.locator(selector)).to_have_count(0)
        expect(viewer.locator("a.addlink")).to_have_count(0)  # the sidebar's "+ Add" too
        if name not in seen:
            seen.add(name)
            shot(viewer, f"viewer-{len(seen)}-{name}")
    # The onboarding page tells the viewer why there is nothing to press.
    viewer.goto(base + "/admin/telegram/bot/onboarding/{demo_pk}/".format(**viewed_rows))
    expect(viewer.locator("#content-main")).to_contain_text("needs the “Can change bot”")
    expect(viewer.locator("#content-main")).to_contain_text("needs the “Can add pairing code”")
    assert boss.errors == [] and viewer.errors == []
    boss_context.close()
    viewer_context.close()
