"""The admin's sandbox chat: what is typed reaches the real webhook, signed; the bot's replies
and the user's messages make one transcript; pairing works from a code's link."""

from __future__ import annotations

import json
import re

import pytest
import responses
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from agents.models import AgentProfile
from agents.secret_store import get_active_secret_value
from telegram.bots import import_telegram_token
from telegram.models import IdentityBinding, PairingCode, SandboxMessage, TelegramUpdate
from telegram.pairing import create_pairing_code
from tests.telegram.conftest import onboard_sandbox_alpha
from workers.models import Message

BASE = "http://chat.test"


@pytest.fixture
def sandbox(db, settings):
    """http://chat.test/* is this app (test client, in process): the sandbox Bot API, and the
    webhook the sandbox bot registers. Yields the webhook requests seen."""
    settings.TELEGRAM_API_BASE_URL = f"{BASE}/sandbox/telegram"
    settings.PUBLIC_BASE_URL = BASE
    app = Client()
    webhook_calls = []

    def forward(request):
        path = request.url.removeprefix(BASE)
        if path.startswith("/telegram/webhook/"):
            webhook_calls.append(request)
        headers = {
            "HTTP_" + k.upper().replace("-", "_"): v
            for k, v in request.headers.items()
            if k.lower().startswith("x-")
        }
        response = app.generic(
            request.method,
            path,
            request.body or b"",
            content_type="application/json",
            **headers,
        )
        return response.status_code, {}, response.content

    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for method in (responses.GET, responses.POST):
            mock.add_callback(method, re.compile(re.escape(BASE) + "/.*"), callback=forward)
        yield webhook_calls


@pytest.fixture
def bot(sandbox):
    return onboard_sandbox_alpha()


@pytest.fixture
def staff(client, db):
    user = get_user_model().objects.create_superuser("boss", "b@example.com", "pw")
    client.force_login(user)
    return client


def send(client, text, *, bot="5151", user=77):
    return client.post(
        reverse("admin:telegram_sandbox_chat_send"),
        {"bot": bot, "user": user, "text": text},
        content_type="application/json",
    )


def poll(client, *, bot="5151", user=77, after=0):
    response = client.get(
        reverse("admin:telegram_sandbox_chat_messages"), {"bot": bot, "user": user, "after": after}
    )
    assert response.status_code == 200
    return response.json()["messages"]


def test_a_message_goes_through_the_real_webhook_signed(staff, bot, sandbox):
    response = send(staff, "hello there")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["webhook"]["http_status"] == 200
    assert body["webhook"]["answer"]["status"] == "enqueued"
    (call,) = sandbox
    assert call.url == f"{BASE}/telegram/webhook/5151/"
    secret = get_active_secret_value("telegram.webhookSecret.alpha")
    assert call.headers["X-Telegram-Bot-Api-Secret-Token"] == secret
    update = json.loads(call.body)
    assert update["update_id"] == body["sent"]["id"]
    assert update["message"]["from"]["id"] == update["message"]["chat"]["id"] == 77
    message = Message.objects.get()
    assert message.payload["message_text"] == "hello there"
    assert TelegramUpdate.objects.get().outcome == "enqueued"
    assert [(m["sender"], m["text"]) for m in poll(staff)] == [("user", "hello there")]


def test_pairing_from_a_code_and_the_bot_reply_in_the_transcript(
    staff, bot, sandbox, django_capture_on_commit_callbacks
):
    pairing = create_pairing_code("consumer-1", "alpha", actor="t")
    with django_capture_on_commit_callbacks(execute=True):  # the bot's answer, after commit
        body = send(staff, f"/start {pairing.code}").json()
    assert body["webhook"]["answer"]["status"] == "paired"
    binding = IdentityBinding.objects.get()
    assert (binding.consumer_user_id, binding.telegram_user_id) == ("consumer-1", "77")
    assert PairingCode.objects.get().status == "used"
    transcript = poll(staff)
    assert [m["sender"] for m in transcript] == ["user", "bot"]  # the bot's confirmation
    assert transcript[0]["text"] == f"/start {pairing.code}"
    # Polling from the last id seen answers only what is new.
    assert poll(staff, after=transcript[-1]["id"]) == []
    assert poll(staff, user=78) == []  # another user's chat is another transcript


def test_the_page_lists_bots_and_prefills_a_start_code(staff, bot):
    page = staff.get(
        reverse("admin:telegram_sandbox_chat"), {"bot": "5151", "user": "91", "start": "ABC123"}
    )
    html = page.content.decode()
    assert page.status_code == 200
    assert "sandbox_5151_bot" in html and 'data-user="91"' in html
    assert 'value="/start ABC123"' in html
    assert "telegram/sandbox_chat.js" in html and "telegram/sandbox_chat.css" in html
    assert get_active_secret_value("telegram.webhookSecret.alpha") not in html


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"bot": "5151", "user": 77, "text": "   "}, "text"),
        ({"bot": "5151", "user": 77, "text": "x" * 4097}, "text"),
        ({"bot": "5151", "user": "bob", "text": "hi"}, "user"),
        ({"bot": "5151", "user": -3, "text": "hi"}, "user"),
        ({"bot": "999", "user": 77, "text": "hi"}, "bot"),
        ({"bot": "5151", "user": 77, "text": ["hi"]}, "text"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(staff, bot, sandbox, payload, field):
    response = staff.post(
        reverse("admin:telegram_sandbox_chat_send"), payload, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid" and field in response.json()["fields"]
    assert not SandboxMessage.objects.exists() and sandbox == []


def test_a_body_that_is_not_a_json_object_is_refused(staff, bot):
    url = reverse("admin:telegram_sandbox_chat_send")
    for body in ("[1]", "nope"):
        response = staff.post(url, body, content_type="application/json")
        assert response.status_code == 400 and response.json()["error"] == "invalid"


def test_a_bot_without_a_sandbox_webhook_cannot_be_chatted_with(staff, sandbox):
    AgentProfile.objects.create(agent_key="beta")
    import_telegram_token("beta", "6161:beta-sandbox-token", actor="t")  # no webhook yet
    response = send(staff, "hi", bot="6161")
    assert response.status_code == 400 and response.json()["error"] == "no_webhook"
    page = staff.get(reverse("admin:telegram_sandbox_chat"), {"bot": "6161"})
    assert "has no webhook in the sandbox" in page.content.decode()
    assert not SandboxMessage.objects.exists()


def test_an_unreachable_webhook_is_reported(staff, bot, sandbox, settings):
    from telegram.models import SandboxWebhook

    SandboxWebhook.objects.filter(bot_id="5151").update(url="http://nowhere.test/hook/")
    body = send(staff, "anyone?").json()
    assert body["webhook"] == {"http_status": None, "error": "unreachable (ConnectionError)"}
    assert body["sent"]["text"] == "anyone?"  # typed, like a message Telegram could not deliver


def test_the_doors_are_404_with_the_sandbox_off(staff, bot, settings):
    settings.AGENT_FACTORY_TELEGRAM_SANDBOX = False
    assert staff.get(reverse("admin:telegram_sandbox_chat")).status_code == 404
    assert send(staff, "hi").status_code == 404
    assert (
        staff.get(reverse("admin:telegram_sandbox_chat_messages"), {"user": 1}).status_code == 404
    )


def test_polling_costs_constant_queries(staff, bot, django_assert_max_num_queries):
    for i in range(30):
        SandboxMessage.objects.create(bot_id="5151", chat_id="77", text=f"m{i}")
    poll(staff)  # warm the session
    with django_assert_max_num_queries(3):  # session, user, transcript
        assert len(poll(staff)) == 30


def test_pairing_pages_link_to_the_sandbox_chat(staff, bot, settings):
    pairing = create_pairing_code("consumer-1", "alpha", actor="t")
    expected = reverse("admin:telegram_sandbox_chat") + f"?bot=5151&amp;start={pairing.code}"
    codes = staff.get(reverse("admin:telegram_pairingcode_changelist")).content.decode()
    assert expected in codes and "open in sandbox chat" in codes
    onboarding = staff.post(
        reverse("admin:telegram_onboarding", args=[bot.agent_id]),
        {"step": "create_pairing", "consumer_user_id": "consumer-2", "ttl_minutes": 15},
    ).content.decode()
    fresh = PairingCode.objects.get(consumer_user_id="consumer-2")
    assert f"start={fresh.code}" in onboarding and "Open in sandbox chat" in onboarding
    settings.AGENT_FACTORY_TELEGRAM_SANDBOX = False  # a real bot: no sandbox links
    codes = staff.get(reverse("admin:telegram_pairingcode_changelist")).content.decode()
    assert "open in sandbox chat" not in codes
