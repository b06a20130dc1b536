"""Every telegram command: its success path, and its bad-argument path run as from a shell
(one clear line on stderr, a non-zero exit, nothing written). Telegram mocked by `responses`."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
import requests
import time_machine
from django.core.management import ManagementUtility
from django.utils import timezone

from agents.models import AgentProfile, AuditEvent, RuntimeConfig, Secret
from agents.secret_store import get_active_secret_value, import_secret
from telegram import pairing
from telegram.models import Bot, IdentityBinding, PairingCode
from tests.telegram.conftest import (
    SOFT_RESET_APPLY,
    TG,
    get_me,
    legacy_binding,
    legacy_pairing,
    soft_reset_changes,
    text_update,
)

TOKEN = "100:AAAA-secret-token"
NEW_TOKEN = "100:CCCC-rotated-token"
OTHER = "200:BBBB-other-token"
URL = "https://factory.test/telegram/webhook/100/"


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``manage.py <argv>`` in-process: returns (exit code, stdout, stderr)."""
    # run_from_argv closes every connection at the end; the test's transaction needs it.
    monkeypatch.setattr("django.core.management.base.connections.close_all", lambda: None)
    monkeypatch.setattr("telegram.bot_api._sleep", lambda seconds: None)

    def run(*argv, stdin: str | None = None):
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = 0
        try:
            ManagementUtility(["manage.py", *argv]).execute()
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def webhook_calls(mock, token, *infos):
    for info in infos:
        mock.post(f"{TG}/bot{token}/getWebhookInfo", json={"ok": True, "result": info})
    mock.post(f"{TG}/bot{token}/setWebhook", json={"ok": True, "result": True})


def set_webhook_bodies(mock) -> list[dict]:
    return [json.loads(c.request.body) for c in mock.calls if c.request.url.endswith("setWebhook")]


def one_line_error(code, err, *needles):
    assert code not in (0, None), err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def onboarded(db, cli, tg):
    AgentProfile.objects.create(agent_key="alpha")
    get_me(tg, TOKEN, 100, "alpha_bot")
    assert cli("import_telegram_token", "alpha", stdin=TOKEN)[0] == 0
    webhook_calls(tg, TOKEN, {"url": ""}, {"url": URL})
    assert cli("configure_telegram_webhook", "alpha")[0] == 0
    return Bot.objects.get()


# import_telegram_token ------------------------------------------------------------------


def test_import_bad_arguments_write_nothing(db, cli, tg):
    get_me(tg, TOKEN, 100, "alpha_bot")
    one_line_error(*cli("import_telegram_token", "ghost", stdin=TOKEN)[::2], "'ghost' not found")
    AgentProfile.objects.create(agent_key="alpha")
    one_line_error(*cli("import_telegram_token", "alpha", stdin="")[::2], "No token on stdin")
    one_line_error(
        *cli("import_telegram_token", "alpha", stdin="two words")[::2], "does not look like"
    )
    code, _, err = cli("import_telegram_token", stdin=TOKEN)
    assert code == 2 and "agent_key" in err
    assert Secret.objects.count() == 0 and Bot.objects.count() == 0
    assert not AuditEvent.objects.exists()


def test_import_network_error_is_clear_and_stores_nothing(db, cli, tg):
    AgentProfile.objects.create(agent_key="alpha")
    tg.post(f"{TG}/bot{TOKEN}/getMe", body=requests.ConnectionError(f"{TG}/bot{TOKEN}/getMe"))
    code, out, err = cli("import_telegram_token", "alpha", stdin=TOKEN)
    one_line_error(code, err, "Could not reach Telegram", "network error (ConnectionError)")
    assert TOKEN not in err and TOKEN not in out
    assert Secret.objects.count() == 0 and Bot.objects.count() == 0


def test_import_of_a_reply_without_bot_id_stores_nothing(db, cli, tg):
    AgentProfile.objects.create(agent_key="alpha")
    tg.post(f"{TG}/bot{TOKEN}/getMe", json={"ok": True, "result": {}})
    one_line_error(*cli("import_telegram_token", "alpha", stdin=TOKEN)[::2], "unexpected")
    assert Secret.objects.count() == 0


def test_same_bot_reimport_is_a_rotation_and_sets_the_webhook_again(onboarded, cli, tg):
    binding = pairing.bind_identity(
        "u1", onboarded.agent, bot_identity="100", telegram_user_id="9", actor="t"
    )
    secret = get_active_secret_value("telegram.webhookSecret.alpha")
    get_me(tg, NEW_TOKEN, 100, "alpha_bot")
    webhook_calls(tg, NEW_TOKEN, {"url": URL}, {"url": URL})
    code, out, err = cli("import_telegram_token", "alpha", "--json", stdin=NEW_TOKEN)
    assert code == 0, err
    data = json.loads(out)
    assert data["rotated"] is True and data["webhook_verified"] is True
    assert get_active_secret_value("telegram.botToken.alpha") == NEW_TOKEN
    assert Secret.objects.filter(secret_ref="telegram.botToken.alpha").count() == 2
    assert IdentityBinding.objects.get(pk=binding.pk).status == "active"  # bindings kept
    assert Bot.objects.get().pk == onboarded.pk
    # The webhook was set again, with the new token, the same URL and the same secret.
    calls = [c.request.url for c in tg.calls if c.request.url.endswith("/setWebhook")]
    assert calls[-1] == f"{TG}/bot{NEW_TOKEN}/setWebhook"
    assert set_webhook_bodies(tg)[-1]["secret_token"] == secret
    assert NEW_TOKEN not in out + err


def test_rotation_whose_webhook_fails_keeps_the_token_and_says_so(onboarded, cli, tg):
    get_me(tg, NEW_TOKEN, 100, "alpha_bot")
    tg.post(f"{TG}/bot{NEW_TOKEN}/getWebhookInfo", json={"ok": True, "result": {"url": URL}})
    tg.post(
        f"{TG}/bot{NEW_TOKEN}/setWebhook",
        status=400,
        json={"ok": False, "error_code": 400, "description": "Bad Request: bad webhook"},
    )
    code, _, err = cli("import_telegram_token", "alpha", stdin=NEW_TOKEN)
    one_line_error(code, err, "Token stored", "bad webhook", "configure_telegram_webhook")
    assert get_active_secret_value("telegram.botToken.alpha") == NEW_TOKEN
    assert "bad webhook" in Bot.objects.get().last_error_message


def test_replace_bot_revokes_bindings_expires_codes_and_audits(onboarded, cli, tg):
    pairing.bind_identity(
        "u1", onboarded.agent, bot_identity="100", telegram_user_id="9", actor="t"
    )
    code = pairing.create_pairing_code("u2", "alpha", actor="t")
    get_me(tg, OTHER, 200, "other_bot")
    refused = cli("import_telegram_token", "alpha", stdin=OTHER)
    one_line_error(refused[0], refused[2], "--replace-bot")
    assert get_active_secret_value("telegram.botToken.alpha") == TOKEN
    assert IdentityBinding.objects.get().status == "active"
    status, out, err = cli("import_telegram_token", "alpha", "--replace-bot", "--json", stdin=OTHER)
    assert status == 0, err
    data = json.loads(out)
    assert (data["replaced_bot"], data["revoked_bindings"], data["expired_pairings"]) == (
        "100",
        1,
        1,
    )
    assert IdentityBinding.objects.get().status == "revoked"
    assert PairingCode.objects.get(pk=code.pk).status == "expired"
    bot = Bot.objects.get()
    assert (bot.bot_identity, bot.username, bot.webhook_verified) == ("200", "other_bot", False)
    event = AuditEvent.objects.filter(action="telegram.import_token").latest("pk")
    assert event.details["replaced_bot"] == "100" and event.details["revoked_bindings"] == 1
    assert OTHER not in json.dumps(event.details)


def lose_key(ref: str) -> None:
    """As if the key that encrypted ``ref`` left AGENT_FACTORY_ENCRYPTION_KEYS."""
    Secret.objects.filter(secret_ref=ref).update(key_id="deadbeef")


def test_replace_bot_deletes_the_old_bots_webhook(onboarded, cli, tg):
    get_me(tg, OTHER, 200, "other_bot")
    deleted = tg.post(f"{TG}/bot{TOKEN}/deleteWebhook", json={"ok": True, "result": True})
    code, out, err = cli("import_telegram_token", "alpha", "--replace-bot", "--json", stdin=OTHER)
    assert code == 0, err
    data = json.loads(out)
    assert (data["old_webhook_deleted"], data["old_webhook_error"]) == (True, None)
    assert deleted.call_count == 1  # with the old bot's token
    event = AuditEvent.objects.get(action="telegram.delete_old_webhook")
    assert event.target_id == "100" and event.details == {
        "bot_identity": "100",
        "deleted": True,
        "error": None,
    }
    assert "still has its webhook" not in err


@pytest.mark.parametrize("cause", ["token_revoked", "token_undecryptable"])
def test_replace_bot_reports_an_old_webhook_it_could_not_delete(onboarded, cli, tg, cause):
    get_me(tg, OTHER, 200, "other_bot")
    deleted = tg.post(
        f"{TG}/bot{TOKEN}/deleteWebhook",
        status=401,
        json={"ok": False, "error_code": 401, "description": "Unauthorized"},
    )
    if cause == "token_undecryptable":
        lose_key("telegram.botToken.alpha")
    code, out, err = cli("import_telegram_token", "alpha", "--replace-bot", "--json", stdin=OTHER)
    assert code == 0, err  # the new bot is stored all the same
    assert get_active_secret_value("telegram.botToken.alpha") == OTHER
    data = json.loads(out)
    assert data["old_webhook_deleted"] is False
    reason = "Unauthorized" if cause == "token_revoked" else "not in AGENT_FACTORY_ENCRYPTION"
    assert reason in data["old_webhook_error"]
    assert "replaced bot 100 still has its webhook" in err and reason in err
    assert deleted.call_count == (1 if cause == "token_revoked" else 0)
    event = AuditEvent.objects.get(action="telegram.delete_old_webhook")
    assert event.details["deleted"] is False and reason in event.details["error"]
    assert TOKEN not in out + err + json.dumps(event.details)


@pytest.mark.parametrize(
    "argv,lost",
    [
        (("configure_telegram_webhook", "alpha"), "telegram.botToken.alpha"),
        (("configure_telegram_webhook", "alpha"), "telegram.webhookSecret.alpha"),
        (("rotate_webhook_secret", "alpha"), "telegram.webhookSecret.alpha"),
        (("reconcile_bot_identity", "alpha"), "telegram.botToken.alpha"),
        (("simulate_update", "alpha", "hi"), "telegram.webhookSecret.alpha"),
    ],
)
def test_commands_say_one_line_when_a_secret_cannot_be_decrypted(onboarded, cli, tg, argv, lost):
    webhook_calls(tg, TOKEN, {"url": URL}, {"url": URL})
    lose_key(lost)
    code, out, err = cli(*argv)
    one_line_error(code, err, lost, "not in AGENT_FACTORY_ENCRYPTION_KEYS")
    assert "Traceback" not in err


# configure_telegram_webhook ------------------------------------------------------------


def test_configure_bad_arguments_write_nothing(db, cli, tg):
    one_line_error(*cli("configure_telegram_webhook", "ghost")[::2], "'ghost' not found")
    AgentProfile.objects.create(agent_key="alpha")
    one_line_error(*cli("configure_telegram_webhook", "alpha")[::2], "import its token first")
    get_me(tg, TOKEN, 100, "alpha_bot")
    cli("import_telegram_token", "alpha", stdin=TOKEN)
    one_line_error(
        *cli("configure_telegram_webhook", "alpha", "--base-url", "ftp://x")[::2], "https://"
    )
    assert not Secret.objects.filter(secret_ref="telegram.webhookSecret.alpha").exists()
    assert not [c for c in tg.calls if "Webhook" in c.request.url]


def test_configure_refused_by_telegram_stores_no_secret(db, cli, tg):
    AgentProfile.objects.create(agent_key="alpha")
    get_me(tg, TOKEN, 100, "alpha_bot")
    cli("import_telegram_token", "alpha", stdin=TOKEN)
    tg.post(f"{TG}/bot{TOKEN}/getWebhookInfo", json={"ok": True, "result": {"url": ""}})
    tg.post(
        f"{TG}/bot{TOKEN}/setWebhook",
        status=400,
        json={"ok": False, "error_code": 400, "description": "Bad Request: HTTPS url required"},
    )
    code, _, err = cli("configure_telegram_webhook", "alpha")
    one_line_error(code, err, "setWebhook failed", "HTTPS url required")
    assert not Secret.objects.filter(secret_ref="telegram.webhookSecret.alpha").exists()
    bot = Bot.objects.get()
    assert not bot.webhook_verified and "HTTPS url required" in bot.last_error_message


def test_configure_with_base_url_stores_info_and_last_error(db, cli, tg):
    AgentProfile.objects.create(agent_key="alpha")
    get_me(tg, TOKEN, 100, "alpha_bot")
    cli("import_telegram_token", "alpha", stdin=TOKEN)
    url = "https://other.example/telegram/webhook/100/"
    info = {
        "url": url,
        "pending_update_count": 3,
        "last_error_date": 1_700_000_000,
        "last_error_message": "Wrong response from the webhook: 502 Bad Gateway",
    }
    webhook_calls(tg, TOKEN, {"url": url}, info)
    code, out, err = cli(
        "configure_telegram_webhook", "alpha", "--base-url", "https://other.example/", "--json"
    )
    assert code == 0 and err == ""  # it pointed at the same URL before: no warning
    assert json.loads(out)["verified"] is True
    [body] = set_webhook_bodies(tg)
    assert body["url"] == url
    bot = Bot.objects.get()
    assert bot.webhook_info["pending_update_count"] == 3 and bot.webhook_info_at is not None
    assert bot.last_error_message.startswith("Wrong response")
    assert bot.last_error_at == dt.datetime.fromtimestamp(1_700_000_000, tz=dt.UTC)


def test_configure_not_verified_when_telegram_reports_another_url(db, cli, tg):
    AgentProfile.objects.create(agent_key="alpha")
    get_me(tg, TOKEN, 100, "alpha_bot")
    cli("import_telegram_token", "alpha", stdin=TOKEN)
    webhook_calls(tg, TOKEN, {"url": ""}, {"url": "https://someone-else.example/hook"})
    code, out, err = cli("configure_telegram_webhook", "alpha", "--json")
    assert code == 0 and json.loads(out)["verified"] is False
    assert "someone-else" in err
    assert Bot.objects.get().webhook_verified is False
    status = json.loads(cli("agent_status", "alpha", "--json")[1])
    assert status["next_action"] == "configure_webhook"


def test_verification_failure_after_set_still_keeps_the_secret(db, cli, tg):
    """setWebhook accepted the secret: Telegram signs with it from now on, so it must be
    stored even when getWebhookInfo then fails."""
    AgentProfile.objects.create(agent_key="alpha")
    get_me(tg, TOKEN, 100, "alpha_bot")
    cli("import_telegram_token", "alpha", stdin=TOKEN)
    tg.post(f"{TG}/bot{TOKEN}/getWebhookInfo", json={"ok": True, "result": {"url": ""}})
    tg.post(f"{TG}/bot{TOKEN}/setWebhook", json={"ok": True, "result": True})
    tg.post(
        f"{TG}/bot{TOKEN}/getWebhookInfo",
        status=400,
        json={"ok": False, "error_code": 400, "description": "temporary"},
    )
    code, out, err = cli("configure_telegram_webhook", "alpha", "--json")
    assert code == 0 and "getWebhookInfo failed" in err
    [body] = set_webhook_bodies(tg)
    assert get_active_secret_value("telegram.webhookSecret.alpha") == body["secret_token"]
    assert json.loads(out)["verified"] is False


def test_each_configure_draws_a_fresh_secret(onboarded, cli, tg):
    first = get_active_secret_value("telegram.webhookSecret.alpha")
    webhook_calls(tg, TOKEN, {"url": URL}, {"url": URL})
    assert cli("configure_telegram_webhook", "alpha")[0] == 0
    second = get_active_secret_value("telegram.webhookSecret.alpha")
    assert first != second and len(second) >= 32
    assert "100" not in second[:3] and "alpha" not in second


# rotate_webhook_secret ------------------------------------------------------------------


def test_rotate_keeps_the_old_secret_ten_minutes(onboarded, cli, tg, post_update):
    old = get_active_secret_value("telegram.webhookSecret.alpha")
    webhook_calls(tg, TOKEN, {"url": URL}, {"url": URL})
    code, out, err = cli("rotate_webhook_secret", "alpha", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["rotated"] is True and data["webhook_url"] == URL
    new = get_active_secret_value("telegram.webhookSecret.alpha")
    assert new != old and set_webhook_bodies(tg)[-1] == {
        "url": URL,
        "secret_token": new,
        "allowed_updates": ["message", "edited_message", "callback_query"],
    }
    assert old not in out + err and new not in out + err
    assert post_update("100", text_update(1, "a"), secret=old).status_code == 200
    assert post_update("100", text_update(2, "b"), secret=new).status_code == 200
    with time_machine.travel(timezone.now() + dt.timedelta(minutes=9, seconds=50)):
        assert post_update("100", text_update(3, "c"), secret=old).status_code == 200
    with time_machine.travel(timezone.now() + dt.timedelta(minutes=10, seconds=5)):
        assert post_update("100", text_update(4, "d"), secret=old).status_code == 403
        assert post_update("100", text_update(5, "e"), secret=new).status_code == 200
    assert AuditEvent.objects.filter(action="telegram.rotate_webhook_secret").exists()


def test_rotate_bad_arguments(db, cli, make_bot):
    one_line_error(*cli("rotate_webhook_secret", "ghost")[::2], "no webhook configured")
    make_bot("alpha", "100")  # a bot, but no webhook set yet
    before = Secret.objects.count()
    one_line_error(*cli("rotate_webhook_secret", "alpha")[::2], "no webhook configured")
    assert Secret.objects.count() == before


# reconcile_bot_identity -----------------------------------------------------------------


def test_reconcile_one_agent_resyncs_username(onboarded, cli, tg):
    get_me(tg, TOKEN, 100, "renamed_bot")
    code, out, err = cli("reconcile_bot_identity", "alpha", "--json")
    assert code == 0, err
    [result] = json.loads(out)["results"]
    assert result["changed"] is True and result["username"] == "renamed_bot"
    assert Bot.objects.get().username == "renamed_bot"
    assert AuditEvent.objects.filter(action="telegram.reconcile_identity").count() == 1
    code, out, _ = cli("reconcile_bot_identity", "alpha", "--json")
    assert json.loads(out)["results"][0]["changed"] is False
    assert AuditEvent.objects.filter(action="telegram.reconcile_identity").count() == 1


def test_reconcile_all(db, cli, tg, make_bot):
    make_bot("alpha", "100", username="old_a")
    make_bot("beta", "200", username="b_bot")
    get_me(tg, "100:TOKEN-alpha", 100, "new_a")
    get_me(tg, "200:TOKEN-beta", 200, "b_bot")
    code, out, err = cli("reconcile_bot_identity", "--all", "--json")
    assert code == 0, err
    results = {r["agent_key"]: r for r in json.loads(out)["results"]}
    assert results["alpha"]["changed"] is True and results["beta"]["changed"] is False
    assert dict(Bot.objects.values_list("agent__agent_key", "username")) == {
        "alpha": "new_a",
        "beta": "b_bot",
    }


def test_reconcile_identity_change_unverifies_the_webhook(onboarded, cli, tg):
    get_me(tg, TOKEN, 101, "alpha_bot")
    code, out, err = cli("reconcile_bot_identity", "alpha")
    assert code == 0 and "configure the webhook again" in err
    bot = Bot.objects.get()
    assert bot.bot_identity == "101" and bot.webhook_verified is False


def test_reconcile_bad_arguments(db, cli, tg, make_bot):
    code, _, err = cli("reconcile_bot_identity")
    one_line_error(code, err, "AGENT_KEY or --all")
    code, _, err = cli("reconcile_bot_identity", "alpha", "--all")
    one_line_error(code, err, "AGENT_KEY or --all")
    AgentProfile.objects.create(agent_key="notoken")
    code, out, err = cli("reconcile_bot_identity", "notoken")
    assert code == 1 and "import one first" in out and "1 agent(s) failed" in err
    # The token now answers as a bot that another agent owns: refused, nothing changed.
    make_bot("alpha", "100")
    make_bot("beta", "200")
    get_me(tg, "100:TOKEN-alpha", 200, "beta_bot")
    code, out, err = cli("reconcile_bot_identity", "alpha")
    assert code == 1 and "already assigned to agent 'beta'" in out
    assert Bot.objects.get(agent__agent_key="alpha").bot_identity == "100"


# create_pairing_code --------------------------------------------------------------------


def test_create_pairing_code_text_and_json(db, cli, make_bot):
    make_bot("alpha", "100", username="alpha_bot")
    code, out, err = cli("create_pairing_code", "user-1", "alpha")
    assert code == 0 and err == ""
    pairing = PairingCode.objects.get()
    assert out.splitlines()[:2] == [pairing.code, f"https://t.me/alpha_bot?start={pairing.code}"]
    code, out, _ = cli("create_pairing_code", "user-1", "alpha", "--ttl-minutes", "0", "--json")
    data = json.loads(out)
    assert set(data) >= {"code", "deep_link", "expires_at"}
    fresh = PairingCode.objects.get(code=data["code"])
    assert fresh.expires_at - fresh.created_at == dt.timedelta(minutes=1)


def test_create_pairing_code_bad_arguments(db, cli, make_bot):
    one_line_error(*cli("create_pairing_code", "u1", "ghost")[::2], "'ghost' not found")
    make_bot("alpha", "100")
    code, _, err = cli("create_pairing_code", "u1", "alpha", "--ttl-minutes", "soon")
    assert code == 2 and "invalid int value" in err
    one_line_error(*cli("create_pairing_code", " ", "alpha")[::2], "consumer_user_id")
    assert PairingCode.objects.count() == 0


# agent_status -----------------------------------------------------------------------------


def test_agent_status_walks_every_next_action(onboarded, cli, tg):
    def status():
        code, out, _ = cli("agent_status", "alpha", "--json")
        assert code == 0
        return json.loads(out)

    assert status()["next_action"] == "ready"  # binding not required
    AgentProfile.objects.filter(agent_key="alpha").update(require_telegram_binding=True)
    data = status()
    assert data["next_action"] == "create_pairing"
    assert set(data["items"]) >= {
        "token_imported",
        "bot_identity_known",
        "webhook_verified",
        "provider_configured",
        "required_secrets_present",
    }
    assert all(set(item) == {"ok", "reason"} for item in data["items"].values())
    code = pairing.create_pairing_code("u1", "alpha", actor="t")
    assert status()["next_action"] == "complete_pairing"
    pairing.consume_pairing_code(
        code.code, bot_identity="100", telegram_user_id="5", telegram_chat_id="5"
    )
    assert status()["next_action"] == "ready" and status()["ready"] is True
    Bot.objects.update(webhook_verified=False)
    assert status()["next_action"] == "configure_webhook"
    Secret.objects.filter(secret_ref="telegram.botToken.alpha").delete()
    data = status()
    assert data["next_action"] == "import_token"
    assert data["items"]["token_imported"]["ok"] is False


def test_agent_status_reports_missing_secrets_and_fly_config(db, cli, make_bot):
    make_bot("alpha", "100")
    AgentProfile.objects.filter(agent_key="alpha").update(secrets_ref=["model.apiKey"])
    RuntimeConfig.get()
    RuntimeConfig.objects.update(provider_kind="fly", app_name="", image="")
    code, out, _ = cli("agent_status", "alpha")
    assert code == 0
    assert "NO  required_secrets_present: missing: model.apiKey" in out
    assert "NO  provider_configured" in out
    import_secret("model.apiKey", "v", actor="t")
    assert "ok  required_secrets_present" in cli("agent_status", "alpha")[1]


def test_next_action_is_the_first_failing_step_and_ready_only_when_ready(onboarded, cli):
    """SPEC §5.1 item 5 (issue 10 item 6: a missing secret answered "ready", ready false)."""

    def status():
        code, out, _ = cli("agent_status", "alpha", "--json")
        assert code == 0
        data = json.loads(out)
        assert data["ready"] is (data["next_action"] == "ready")
        return data["next_action"]

    assert status() == "ready"
    AgentProfile.objects.filter(agent_key="alpha").update(
        secrets_ref=["model.apiKey"], enabled=False, require_telegram_binding=True
    )
    RuntimeConfig.get()
    RuntimeConfig.objects.update(provider_kind="fly", app_name="", image="")
    assert status() == "configure_provider"
    RuntimeConfig.objects.update(app_name="app", image="img")
    assert status() == "import_secrets"
    import_secret("model.apiKey", "v", actor="t")
    assert status() == "enable_agent"
    AgentProfile.objects.filter(agent_key="alpha").update(enabled=True)
    # Bindings that can never route do not count as paired: legacy (no bot), another bot's,
    # or one without a Telegram user (only the removed chat fallback matched those).
    agent = AgentProfile.objects.get(agent_key="alpha")
    legacy_binding(agent, "old", telegram_user_id="5")
    pairing.bind_identity("u-other", agent, bot_identity="999", telegram_user_id="6", actor="t")
    pairing.bind_identity("u-chat", agent, bot_identity="100", telegram_chat_id="7", actor="t")
    assert status() == "create_pairing"
    pairing.bind_identity("u1", agent, bot_identity="100", telegram_user_id="8", actor="t")
    assert status() == "ready"


def test_agent_status_bad_argument(db, cli):
    one_line_error(*cli("agent_status", "ghost")[::2], "'ghost' not found")


# soft_reset_telegram_bindings -------------------------------------------------------------


@pytest.fixture
def legacy(make_bot):
    bot = make_bot("alpha", "100")
    AgentProfile.objects.create(agent_key="nobot")

    def binding(consumer, **fields):
        return legacy_binding(bot.agent, consumer, telegram_user_id="9", **fields)

    return {
        "active": binding("u1"),
        "revoked": binding("u2", status="revoked", revoked_at=timezone.now()),
        "manual": binding("u3", source="manual"),  # look-alikes the reset must not touch
        "modern": binding("u4", bot_identity="100"),
        "pairing": legacy_pairing(bot.agent, "u5"),
    }


def snapshot():
    return (
        list(IdentityBinding.objects.order_by("pk").values()),
        list(PairingCode.objects.order_by("pk").values()),
        AuditEvent.objects.count(),
    )


def test_soft_reset_dry_run_writes_nothing_and_previews(legacy, cli):
    before = snapshot()
    code, out, err = cli(
        "soft_reset_telegram_bindings", "--revoke-bindings", "--expire-pairings", "--json"
    )
    assert code == 0, err
    assert json.loads(out) == {
        "revoked_bindings": 1,
        "annotated_bindings": 1,
        "expired_pairings": 1,
        "pending_pairings_missing_bot_identity": 1,
        "legacy_bindings_missing_bot_identity": 2,
        "profiles_missing_bot_identity": 1,
        "applied": False,
    }
    assert snapshot() == before
    assert "Dry run" in cli("soft_reset_telegram_bindings")[1]
    assert snapshot() == before


def test_soft_reset_apply_six_counts_then_idempotent(legacy, cli):
    code, out, _ = cli(*SOFT_RESET_APPLY)
    report = json.loads(out)
    assert (
        report["revoked_bindings"],
        report["annotated_bindings"],
        report["expired_pairings"],
        report["pending_pairings_missing_bot_identity"],
        report["legacy_bindings_missing_bot_identity"],
        report["profiles_missing_bot_identity"],
    ) == (1, 1, 1, 1, 2, 1)
    active = IdentityBinding.objects.get(pk=legacy["active"].pk)
    assert active.status == "revoked" and active.revoked_at is not None
    assert active.metadata["soft_reset_reason"] == "missing_bot_identity"
    assert active.metadata["soft_reset_at"]
    revoked = IdentityBinding.objects.get(pk=legacy["revoked"].pk)
    assert revoked.metadata["soft_reset_reason"] == "missing_bot_identity"
    assert revoked.revoked_at == legacy["revoked"].revoked_at  # left alone
    for untouched in ("manual", "modern"):
        row = IdentityBinding.objects.get(pk=legacy[untouched].pk)
        assert row.status == "active" and row.metadata == {}
    assert PairingCode.objects.get(pk=legacy["pairing"].pk).status == "expired"
    assert AuditEvent.objects.filter(action="telegram.soft_reset").count() == 1
    before = snapshot()
    code, out, _ = cli(*SOFT_RESET_APPLY)
    again = json.loads(out)
    assert soft_reset_changes(again) == (0, 0, 0)
    assert again["legacy_bindings_missing_bot_identity"] == 2  # still found, not changed
    assert snapshot() == before  # no write, no audit row


def test_soft_reset_annotate_only_then_revoke(legacy, cli):
    code, out, _ = cli("soft_reset_telegram_bindings", "--apply", "--json")
    report = json.loads(out)
    assert (report["revoked_bindings"], report["annotated_bindings"]) == (0, 2)
    assert report["expired_pairings"] == 0
    assert IdentityBinding.objects.get(pk=legacy["active"].pk).status == "active"
    assert PairingCode.objects.get(pk=legacy["pairing"].pk).status == "pending"
    code, out, _ = cli("soft_reset_telegram_bindings", "--apply", "--revoke-bindings", "--json")
    report = json.loads(out)
    assert (report["revoked_bindings"], report["annotated_bindings"]) == (1, 0)
    assert IdentityBinding.objects.get(pk=legacy["active"].pk).status == "revoked"


def test_soft_reset_bad_argument(legacy, cli):
    before = snapshot()
    code, _, err = cli("soft_reset_telegram_bindings", "--aply")
    assert code == 2 and "unrecognized arguments" in err
    assert snapshot() == before


def test_fresh_configure_replaces_the_secret_at_once(onboarded, cli, tg, post_update):
    old = get_active_secret_value("telegram.webhookSecret.alpha")
    assert post_update("100", text_update(1, "a"), secret=old).status_code == 200
    webhook_calls(tg, TOKEN, {"url": URL}, {"url": URL})
    assert cli("configure_telegram_webhook", "alpha")[0] == 0
    new = get_active_secret_value("telegram.webhookSecret.alpha")
    # Not a rotation: no grace, and this process's secret cache does not keep the old one.
    assert post_update("100", text_update(2, "b"), secret=old).status_code == 403
    assert post_update("100", text_update(3, "c"), secret=new).status_code == 200


def test_concurrent_import_of_the_same_bot_is_a_clear_error(db, cli, tg, monkeypatch):
    from django.db import IntegrityError

    AgentProfile.objects.create(agent_key="alpha")
    get_me(tg, TOKEN, 100, "alpha_bot")

    def lost_race(**kwargs):
        raise IntegrityError("duplicate key value violates unique constraint")

    monkeypatch.setattr(Bot.objects, "create", lost_race)
    code, _, err = cli("import_telegram_token", "alpha", stdin=TOKEN)
    one_line_error(code, err, "assigned concurrently")
    assert Secret.objects.count() == 0 and not AuditEvent.objects.exists()


def test_import_at_a_terminal_asks_without_echo(db, cli, tg, monkeypatch):
    AgentProfile.objects.create(agent_key="alpha")
    get_me(tg, TOKEN, 100, "alpha_bot")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdin", Terminal(""))
    monkeypatch.setattr("getpass.getpass", lambda prompt: TOKEN)
    code, out, err = cli("import_telegram_token", "alpha")
    assert code == 0, err
    assert get_active_secret_value("telegram.botToken.alpha") == TOKEN and TOKEN not in out
