"""The Telegram sandbox (a fake Bot API served by the app), ``simulate_update`` and the
sandbox demo set-up, driven through the real HTTP clients: ``responses`` hands every request
for http://sandbox.test to this Django app's test client, in process."""

from __future__ import annotations

import importlib
import io
import json
import re

import pytest
import responses
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import clear_url_caches, reverse

from agents.models import AgentProfile
from agents.secret_store import get_active_secret_value
from telegram.bot_api import TelegramApiError
from telegram.bots import bot_client
from telegram.models import Bot, SandboxMessage, SandboxWebhook
from tests.telegram.conftest import onboard_sandbox_alpha
from workers.models import Message

BASE = "http://sandbox.test"
SANDBOX = f"{BASE}/sandbox/telegram"


@pytest.fixture
def app(db, settings):
    """Route http://sandbox.test/* into the app; point Telegram and the webhook URL at it."""
    settings.TELEGRAM_API_BASE_URL = SANDBOX
    settings.PUBLIC_BASE_URL = BASE
    django_client = Client()
    seen = []

    def forward(request):
        path = request.url.removeprefix(BASE)
        headers = {
            "HTTP_" + name.upper().replace("-", "_"): value
            for name, value in request.headers.items()
            if name.lower().startswith("x-")
        }
        seen.append(request)
        response = django_client.generic(
            request.method,
            path,
            request.body or b"",
            content_type=request.headers.get("Content-Type", "application/json"),
            **headers,
        )
        return response.status_code, {}, response.content

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for method in (responses.GET, responses.POST):
            mock.add_callback(method, re.compile(re.escape(BASE) + "/.*"), callback=forward)
        yield seen


def bot_call(method, token="4242:sandbox-token", **params):
    response = Client().post(
        f"/sandbox/telegram/bot{token}/{method}", params, content_type="application/json"
    )
    return response.status_code, response.json()


# The fake Bot API --------------------------------------------------------------------------
def test_get_me_names_the_bot_after_the_token_digits(db):
    status, body = bot_call("getMe")
    assert status == 200 and body["ok"] is True
    assert body["result"]["id"] == 4242 and body["result"]["is_bot"] is True
    assert body["result"]["username"] == "sandbox_4242_bot"


def test_bad_token_and_unknown_method(db):
    assert bot_call("getMe", token="not-a-token") == (
        401,
        {"ok": False, "error_code": 401, "description": "Unauthorized"},
    )
    status, body = bot_call("sendSticker")
    assert status == 404 and "sendSticker" in body["description"]


def test_set_webhook_then_get_webhook_info(db):
    status, body = bot_call(
        "setWebhook", url="https://example.test/hook/", allowed_updates=["message"]
    )
    assert (status, body["result"]) == (200, True)
    _, info = bot_call("getWebhookInfo")
    assert info["result"]["url"] == "https://example.test/hook/"
    assert info["result"]["allowed_updates"] == ["message"]
    _, other = bot_call("getWebhookInfo", token="7:other")  # webhooks are per bot
    assert other["result"]["url"] == ""


def test_send_message_is_stored_and_checked_like_telegram(db):
    status, body = bot_call("sendMessage", chat_id=99, text="hello")
    assert status == 200 and body["result"]["text"] == "hello"
    assert list(SandboxMessage.objects.values_list("bot_id", "chat_id", "text")) == [
        ("4242", "99", "hello")
    ]
    assert bot_call("sendMessage", chat_id=99, text="x" * 4097)[0] == 400
    assert bot_call("sendMessage", chat_id=99)[0] == 400
    assert bot_call("sendMessage", text="no chat")[0] == 400
    assert SandboxMessage.objects.count() == 1


def test_get_file_and_download(db):
    status, body = bot_call("getFile", file_id="abc")
    assert status == 200 and body["result"]["file_path"] == "sandbox/abc.bin"
    assert bot_call("getFile")[0] == 400
    download = Client().get("/sandbox/telegram/file/bot4242:sandbox-token/sandbox/abc.bin")
    assert download.status_code == 200 and download.content == b"sandbox:sandbox/abc.bin"
    assert body["result"]["file_size"] == len(download.content)


def test_the_real_client_splits_long_replies_for_the_sandbox(app):
    sent = bot_client("4242:sandbox-token").send_message(5, "y" * 5000)
    assert len(sent) == 2
    assert [len(m.text) for m in SandboxMessage.objects.order_by("id")] == [4096, 904]
    with pytest.raises(TelegramApiError, match="not in the sandbox"):
        bot_client("4242:sandbox-token")._call("sendSticker")


def test_reply_files_are_stored_as_a_line_naming_the_file(app):
    client = bot_client("4242:sandbox-token")
    client.send_file_once("sendPhoto", {"chat_id": 5, "caption": "hi"}, "photo", "a.png", b"12")
    assert SandboxMessage.objects.get().text == "[photo: a.png, 2 bytes] hi"
    with pytest.raises(TelegramApiError, match="photo are required"):
        client.call_once("sendPhoto", {"chat_id": 5})


def test_sent_messages_are_visible_in_the_admin(db, client):
    SandboxMessage.objects.create(bot_id="4242", chat_id="99", text="visible reply")
    user = get_user_model().objects.create_superuser("boss", "b@example.com", "pw")
    client.force_login(user)
    page = client.get(reverse("admin:telegram_sandboxmessage_changelist"))
    assert page.status_code == 200 and "visible reply" in page.content.decode()


def test_the_sandbox_is_not_served_when_switched_off(db, settings):
    import config.urls

    original = settings.AGENT_FACTORY_TELEGRAM_SANDBOX
    assert original, "the test settings serve the sandbox"
    settings.AGENT_FACTORY_TELEGRAM_SANDBOX = False
    try:
        importlib.reload(config.urls)
        clear_url_caches()
        assert Client().post("/sandbox/telegram/bot1:x/getMe").status_code == 404
    finally:
        settings.AGENT_FACTORY_TELEGRAM_SANDBOX = original
        importlib.reload(config.urls)
        clear_url_caches()
    assert Client().post("/sandbox/telegram/bot1:x/getMe").status_code == 200


# simulate_update ---------------------------------------------------------------------------
@pytest.fixture
def onboarded(app):
    return onboard_sandbox_alpha()


def test_simulate_update_posts_a_signed_update_that_is_enqueued(onboarded, app):
    out = io.StringIO()
    call_command(
        "simulate_update", "alpha", "hi there", "--telegram-user", "77", "--chat", "88",
        "--json", stdout=out,
    )  # fmt: skip
    data = json.loads(out.getvalue())
    assert data["http_status"] == 200 and data["status"] == "enqueued"
    webhook = app[-1]
    assert webhook.url == f"{BASE}/telegram/webhook/5151/"
    secret = get_active_secret_value("telegram.webhookSecret.alpha")
    assert webhook.headers["X-Telegram-Bot-Api-Secret-Token"] == secret
    update = json.loads(webhook.body)
    assert update["update_id"] == data["update_id"]
    assert update["message"]["from"]["id"] == 77 and update["message"]["chat"]["id"] == 88
    message = Message.objects.get()
    assert message.payload["message_text"] == "hi there"
    assert message.payload["metadata"]["telegram_chat_id"] == "88"


def test_simulate_update_defaults_the_chat_to_the_user(onboarded, app):
    call_command("simulate_update", "alpha", "hello", stdout=io.StringIO())
    update = json.loads(app[-1].body)
    assert update["message"]["chat"]["id"] == update["message"]["from"]["id"] == 424242
    call_command("simulate_update", "alpha", "again", stdout=io.StringIO())
    assert Message.objects.count() == 2  # a fresh update_id each time: not a duplicate


@pytest.mark.parametrize(
    "args, message",
    [
        (["ghost", "hi"], "Agent 'ghost' has no bot"),
        (["alpha", "   "], "TEXT must not be empty"),
        (["alpha", "hi", "--telegram-user", "bob"], "invalid int value: 'bob'"),
        (["alpha", "hi", "--chat", "1.5"], "invalid int value: '1.5'"),
        (["alpha"], "the following arguments are required: text"),
    ],
)
def test_simulate_update_bad_arguments(onboarded, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("simulate_update", *args)
    assert not Message.objects.exists()


def test_simulate_update_reports_a_webhook_that_does_not_answer_200(onboarded, settings):
    settings.PUBLIC_BASE_URL = f"{BASE}/nowhere"
    with pytest.raises(CommandError, match="The webhook answered 404"):
        call_command("simulate_update", "alpha", "lost", stdout=io.StringIO())
    assert not Message.objects.exists()


def test_simulate_update_unreachable_server(onboarded):
    # Nothing answers for this host (responses refuses it like a closed port).
    with pytest.raises(CommandError, match=r"Could not reach http://127\.0\.0\.1:9"):
        call_command("simulate_update", "alpha", "hi", "--base-url", "http://127.0.0.1:9")


def test_webhook_rejects_an_unsigned_copy_of_the_simulated_update(onboarded, app):
    call_command("simulate_update", "alpha", "signed", stdout=io.StringIO())
    update = json.loads(app[-1].body)
    update["update_id"] += 1
    response = Client().post(
        "/telegram/webhook/5151/",
        json.dumps(update),
        content_type="application/json",
        HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN="wrong",
    )
    assert response.status_code == 403
    assert Message.objects.count() == 1


# setup_sandbox_demo ------------------------------------------------------------------------
def test_setup_sandbox_demo_is_idempotent(app):
    call_command("setup_sandbox_demo", stdout=io.StringIO())
    call_command("setup_sandbox_demo", stdout=io.StringIO())
    bot = Bot.objects.get(agent__agent_key="demo")
    assert bot.bot_identity == "1000001"
    hook = SandboxWebhook.objects.get(bot_id="1000001")
    assert hook.url == f"{BASE}/telegram/webhook/1000001/"
    call_command("simulate_update", "demo", "hello demo", stdout=io.StringIO())
    assert Message.objects.get().agent_key == "demo"


def test_setup_sandbox_demo_follows_the_server_to_another_port(app, settings):
    call_command("setup_sandbox_demo", stdout=io.StringIO())
    settings.PUBLIC_BASE_URL = "http://sandbox.test:8123"  # PORT=8123 bash scripts/run.sh
    call_command("setup_sandbox_demo", stdout=io.StringIO())
    expected = "http://sandbox.test:8123/telegram/webhook/1000001/"
    assert Bot.objects.get(agent__agent_key="demo").webhook_url == expected
    assert SandboxWebhook.objects.get(bot_id="1000001").url == expected


def test_setup_sandbox_demo_refuses_a_real_telegram(db, settings):
    settings.TELEGRAM_API_BASE_URL = "https://api.telegram.org"
    with pytest.raises(CommandError, match="does not point at the sandbox"):
        call_command("setup_sandbox_demo")
    assert not AgentProfile.objects.filter(agent_key="demo").exists()


def test_the_demo_admin_onboards_a_sandbox_bot_in_the_browser(app, tmp_path):
    from workers.management.commands.run_embedded import ensure_demo_admin

    username, password, created = ensure_demo_admin(tmp_path / "demo-admin-password")
    assert created
    browser = Client()
    assert browser.login(username=username, password=password)
    agent = AgentProfile.objects.create(agent_key="shop")
    page = reverse("admin:telegram_onboarding", args=[agent.pk])
    assert browser.get(page).status_code == 200
    response = browser.post(
        page, {"step": "import_token", "token": "6060:shop-sandbox-token"}, follow=True
    )
    assert "Token verified: @sandbox_6060_bot" in response.content.decode()
    response = browser.post(page, {"step": "configure_webhook"}, follow=True)
    assert f"Webhook set to {BASE}/telegram/webhook/6060/" in response.content.decode()
    assert SandboxWebhook.objects.get(bot_id="6060").url == f"{BASE}/telegram/webhook/6060/"
    response = browser.post(
        page, {"step": "create_pairing", "consumer_user_id": "customer-1", "ttl_minutes": 15}
    )
    assert "t.me/sandbox_6060_bot?start=" in response.content.decode()
    # The onboarded bot now takes updates: one from the simulator is queued for its agent.
    call_command("simulate_update", "shop", "hello shop", stdout=io.StringIO())
    assert Message.objects.get().agent_key == "shop"
