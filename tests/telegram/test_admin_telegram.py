"""The Telegram admin: the onboarding page end to end, lists with filters and search, the
actions, and never a token or webhook secret on any page."""

from __future__ import annotations

from django.urls import reverse

from agents.models import AgentProfile, AuditEvent, Secret
from agents.secret_store import get_active_secret_value
from telegram.models import Bot, IdentityBinding, PairingCode
from telegram.pairing import bind_identity, create_pairing_code
from tests.telegram.conftest import TG, get_me, legacy_binding, legacy_pairing

TOKEN = "100:AAAA-admin-secret-token"


def page(admin_client, url, **kwargs):
    response = admin_client.get(url, **kwargs)
    assert response.status_code == 200, url
    return response.content.decode()


def assert_no_secrets(content: str):
    secrets = [TOKEN] + [
        get_active_secret_value(ref)
        for ref in Secret.objects.filter(active=True).values_list("secret_ref", flat=True)
    ]
    for secret in secrets:
        assert secret not in content


def test_onboarding_flow_never_shows_the_token_or_secret(admin_client, db, tg):
    agent = AgentProfile.objects.create(agent_key="alpha", require_telegram_binding=True)
    url = reverse("admin:telegram_onboarding", args=[agent.pk])
    assert "<strong>import_token</strong>" in page(admin_client, url)

    get_me(tg, TOKEN, 100, "alpha_bot")
    response = admin_client.post(url, {"step": "import_token", "token": TOKEN}, follow=True)
    content = response.content.decode()
    assert "Token verified: @alpha_bot" in content
    assert "<strong>configure_webhook</strong>" in content
    assert_no_secrets(content)

    hook = "https://factory.test/telegram/webhook/100/"
    tg.post(f"{TG}/bot{TOKEN}/getWebhookInfo", json={"ok": True, "result": {"url": ""}})
    tg.post(f"{TG}/bot{TOKEN}/setWebhook", json={"ok": True, "result": True})
    tg.post(f"{TG}/bot{TOKEN}/getWebhookInfo", json={"ok": True, "result": {"url": hook}})
    content = admin_client.post(url, {"step": "configure_webhook"}, follow=True).content.decode()
    assert f"Webhook set to {hook}" in content and "<strong>create_pairing</strong>" in content
    assert get_active_secret_value("telegram.webhookSecret.alpha")
    assert_no_secrets(content)

    response = admin_client.post(
        url, {"step": "create_pairing", "consumer_user_id": "u1", "ttl_minutes": 30}
    )
    content = response.content.decode()
    code = PairingCode.objects.get(consumer_user_id="u1")
    assert f"https://t.me/alpha_bot?start={code.code}" in content and "<svg" in content
    assert "<strong>complete_pairing</strong>" in content
    assert_no_secrets(content)

    content = admin_client.post(url, {"step": "rotate_secret"}, follow=True).content.decode()
    assert "Webhook secret rotated" in content
    assert_no_secrets(content)
    get_me(tg, TOKEN, 100, "alpha_bot")
    content = admin_client.post(url, {"step": "reconcile_identity"}, follow=True).content.decode()
    assert "Bot identity refreshed" in content
    for other in (
        reverse("admin:telegram_bot_changelist"),
        reverse("admin:telegram_bot_change", args=[Bot.objects.get().pk]),
        reverse("admin:agents_auditevent_changelist"),
        reverse("admin:agents_secret_changelist"),
    ):
        assert_no_secrets(page(admin_client, other))
    for event in AuditEvent.objects.all():
        assert_no_secrets(str(event.details))


def test_onboarding_refused_token_is_an_error_message_and_stores_nothing(admin_client, db, tg):
    agent = AgentProfile.objects.create(agent_key="alpha")
    url = reverse("admin:telegram_onboarding", args=[agent.pk])
    get_me(tg, TOKEN, 0, "", status=401)
    response = admin_client.post(url, {"step": "import_token", "token": TOKEN})
    content = response.content.decode()
    assert response.status_code == 200 and "Telegram rejected the token" in content
    assert TOKEN not in content  # the password field is not re-rendered with the value
    assert Secret.objects.count() == 0 and Bot.objects.count() == 0
    response = admin_client.post(
        url, {"step": "create_pairing", "consumer_user_id": "u", "ttl_minutes": 15}
    )
    assert "import its token first" in response.content.decode()
    assert PairingCode.objects.count() == 0


def test_onboarding_page_needs_staff(client, django_user_model, db):
    agent = AgentProfile.objects.create(agent_key="alpha")
    url = reverse("admin:telegram_onboarding", args=[agent.pk])
    django_user_model.objects.create_user("bob", password="pw")
    client.login(username="bob", password="pw")
    response = client.get(url)
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_agent_list_links_to_onboarding(admin_client, db):
    agent = AgentProfile.objects.create(agent_key="alpha")
    content = page(admin_client, reverse("admin:agents_agentprofile_changelist"))
    assert reverse("admin:telegram_onboarding", args=[agent.pk]) in content


def test_lists_filter_and_search(admin_client, make_bot):
    a = make_bot("alpha", "100", username="alpha_bot")
    make_bot("beta", "200", username="beta_bot")
    bind_identity("alice", a.agent, bot_identity="100", telegram_user_id="4242", actor="t")
    legacy_binding(a.agent, "legacy-user")
    code = create_pairing_code("carol", "alpha", actor="t")
    create_pairing_code("dave", "beta", actor="t")

    bots = reverse("admin:telegram_bot_changelist")
    content = page(admin_client, bots, data={"q": "beta_bot"})
    assert "beta_bot" in content and "alpha_bot" not in content

    bindings = reverse("admin:telegram_identitybinding_changelist")
    content = page(admin_client, bindings, data={"q": "4242"})
    assert "alice" in content and "legacy-user" not in content
    content = page(admin_client, bindings, data={"has_bot": "no"})
    assert "legacy-user" in content and "alice" not in content
    content = page(admin_client, bindings, data={"source": "manual"})
    assert "alice" in content and "legacy-user" not in content

    codes = reverse("admin:telegram_pairingcode_changelist")
    content = page(admin_client, codes, data={"q": code.code})
    assert "carol" in content and "dave" not in content
    content = page(admin_client, codes, data={"status": "expired"})
    assert "carol" not in content and "dave" not in content


def test_bot_actions_reconcile_and_rotate(admin_client, make_bot, tg):
    bot = make_bot("alpha", "100", username="old_name")
    Bot.objects.filter(pk=bot.pk).update(webhook_url="https://factory.test/telegram/webhook/100/")
    token = "100:TOKEN-alpha"
    get_me(tg, token, 100, "new_name")
    url = reverse("admin:telegram_bot_changelist")
    response = admin_client.post(
        url, {"action": "reconcile_identity", "_selected_action": [bot.pk]}, follow=True
    )
    assert "1 bot(s) reconciled" in response.content.decode()
    assert Bot.objects.get().username == "new_name"

    old = get_active_secret_value("telegram.webhookSecret.alpha")
    hook = "https://factory.test/telegram/webhook/100/"
    tg.post(f"{TG}/bot{token}/getWebhookInfo", json={"ok": True, "result": {"url": hook}})
    tg.post(f"{TG}/bot{token}/setWebhook", json={"ok": True, "result": True})
    response = admin_client.post(
        url,
        {"action": "rotate_secret", "_selected_action": [bot.pk], "confirm": "yes"},
        follow=True,
    )
    content = response.content.decode()
    assert "1 webhook secret(s) rotated" in content
    new = get_active_secret_value("telegram.webhookSecret.alpha")
    assert new != old and new not in content and old not in content
    assert Bot.objects.get().previous_secret_valid_until is not None


def test_bot_action_errors_are_messages_not_tracebacks(admin_client, make_bot, tg):
    bot = make_bot("alpha", "100")
    url = reverse("admin:telegram_bot_changelist")
    response = admin_client.post(
        url,
        {"action": "rotate_secret", "_selected_action": [bot.pk], "confirm": "yes"},
        follow=True,
    )
    content = response.content.decode()
    assert response.status_code == 200 and "no webhook configured yet" in content
    assert "0 webhook secret(s) rotated" in content


def test_revoke_binding_needs_confirmation_and_audits(admin_client, make_bot):
    bot = make_bot("alpha", "100")
    binding = bind_identity("u1", bot.agent, bot_identity="100", telegram_user_id="1", actor="t")
    url = reverse("admin:telegram_identitybinding_changelist")
    body = {"action": "revoke", "_selected_action": [binding.pk]}
    content = admin_client.post(url, body).content.decode()
    assert "Revoke bindings?" in content and str(binding) in content
    assert IdentityBinding.objects.get(pk=binding.pk).status == "active"
    admin_client.post(url, {**body, "confirm": "yes"})
    assert IdentityBinding.objects.get(pk=binding.pk).status == "revoked"
    event = AuditEvent.objects.get(action="telegram.revoke_binding")
    assert event.actor == "admin" and event.details["consumer_user_id"] == "u1"


def test_soft_reset_preview_counts_then_apply(admin_client, make_bot):
    bot = make_bot("alpha", "100")
    legacy = legacy_binding(bot.agent, "legacy")
    url = reverse("admin:telegram_identitybinding_changelist")
    body = {"action": "soft_reset", "_selected_action": [legacy.pk]}
    content = admin_client.post(url, body).content.decode()
    assert "Dry run" in content
    assert "<td>revoked_bindings</td><td>1</td>" in content  # what applying would do
    assert "<td>legacy_bindings_missing_bot_identity</td><td>1</td>" in content
    assert IdentityBinding.objects.get(pk=legacy.pk).status == "active"
    assert not AuditEvent.objects.filter(action="telegram.soft_reset").exists()
    admin_client.post(url, {**body, "confirm": "yes", "revoke_bindings": "on"})
    assert IdentityBinding.objects.get(pk=legacy.pk).status == "revoked"
    event = AuditEvent.objects.get(action="telegram.soft_reset")
    assert event.actor == "admin" and event.details["revoked_bindings"] == 1


def test_soft_reset_from_the_pairing_codes_list(admin_client, make_bot):
    bot = make_bot("alpha", "100")
    legacy = legacy_pairing(bot.agent, "u")
    url = reverse("admin:telegram_pairingcode_changelist")
    body = {"action": "soft_reset", "_selected_action": [legacy.pk]}
    content = admin_client.post(url, body).content.decode()
    assert "<td>expired_pairings</td><td>1</td>" in content
    assert PairingCode.objects.get(pk=legacy.pk).status == "pending"
    admin_client.post(url, {**body, "confirm": "yes", "expire_pairings": "on"})
    assert PairingCode.objects.get(pk=legacy.pk).status == "expired"
