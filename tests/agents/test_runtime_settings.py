"""Per-agent runtime settings (SPEC §21): validation, ``configure_agent --runtime-json``,
the admin's write-only model key, and the readiness item "model key present"."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from agents.models import AgentProfile, AuditEvent, Secret
from agents.secret_store import get_active_secret_value, import_secret
from tests.agents.test_commands import assert_refused

KEY = "sk-admin-PLAINTEXT-91b3f0"


def test_runtime_json_sets_the_settings_and_prints_them(cli, db):
    runtime = {
        "handler": "llm",
        "model": "openai/gpt-4o-mini",
        "base_url": "https://openrouter.ai/api/v1",
        "api_key_secret_ref": "openrouter.key",
        "temperature": 0.2,
        "max_tokens": 512,
        "timeout_seconds": 60,
        "system_prompt": "Be kind.",
        "delivery": "worker",
        "price_per_million_input_tokens": 0.15,
        "price_per_million_output_tokens": "0.6",
    }
    result = cli("configure_agent", "bot", "--runtime-json", json.dumps(runtime), "--json")
    assert result.code == 0, result.err
    printed = json.loads(result.out)["runtime"]
    assert printed == {
        **runtime,
        "price_per_million_input_tokens": "0.15",
        "price_per_million_output_tokens": "0.6",
    }
    profile = AgentProfile.objects.get()
    assert (profile.handler, profile.model, profile.temperature) == ("llm", runtime["model"], 0.2)
    assert profile.price_per_million_input_tokens == Decimal("0.15")
    assert profile.delivery == "worker"
    # Keys left out keep their value; null resets one to its default.
    cli("configure_agent", "bot", "--runtime-json", '{"temperature": null, "max_tokens": 64}')
    profile.refresh_from_db()
    assert (profile.temperature, profile.max_tokens, profile.model) == (None, 64, runtime["model"])
    assert profile.version == 2
    assert AuditEvent.objects.filter(action="agent.update").get().details["changed"] == [
        "max_tokens",
        "temperature",
    ]


@pytest.mark.parametrize(
    "runtime, message",
    [
        ("{bad", "--runtime-json is not valid JSON"),
        ("[]", "--runtime-json must be a JSON object"),
        ('{"colour": 1}', "Unknown runtime key(s): colour"),
        ('{"api_key": "sk-x"}', "takes no plaintext key"),
        ('{"handler": "llm"}', "model: The llm handler needs a model name."),
        ('{"handler": "bash -c x"}', "Handler must be one of echo, llm, openclaw, http"),
        ('{"model": "gpt 4"}', "Model must be a name without spaces"),
        ('{"base_url": "ftp://x"}', "Base URL must be an http(s) URL"),
        ('{"base_url": "https://u:p@host/v1"}', "must not carry credentials"),
        ('{"api_key_secret_ref": "bad ref"}', "Secret ref must be"),
        ('{"temperature": 3}', "temperature: Ensure this value is less than or equal to 2.0"),
        ('{"temperature": "hot"}', "Runtime 'temperature' must be a number"),
        ('{"max_tokens": 0}', "max_tokens: Ensure this value is greater than or equal to 1"),
        ('{"max_tokens": true}', "Runtime 'max_tokens' must be an integer"),
        ('{"timeout_seconds": 99999}', "timeout_seconds: Ensure this value is less than"),
        ('{"price_per_million_input_tokens": -1}', "greater than or equal to 0"),
        ('{"price_per_million_output_tokens": "lots"}', "must be a number"),
        ('{"delivery": "pigeon"}', "delivery: Value 'pigeon' is not a valid choice."),
    ],
)
def test_bad_runtime_json_is_refused_and_changes_nothing(cli, db_state, runtime, message):
    cli("configure_agent", "bot")
    before = db_state()
    assert_refused(cli("configure_agent", "bot", "--runtime-json", runtime), message)
    assert db_state() == before


# Admin -------------------------------------------------------------------------------------
def admin_form(**overrides) -> dict:
    data = {
        "agent_key": "support",
        "secrets_ref": "[]",
        "initial-secrets_ref": "[]",
        "bridge_config": "{}",
        "initial-bridge_config": "{}",
        "enabled": "on",
        "handler": "llm",
        "delivery": "server",
        "model": "gpt-4o-mini",
        "base_url": "",
        "api_key_secret_ref": "",
        "api_key": "",
        "timeout_seconds": "120",
        "price_per_million_input_tokens": "0",
        "price_per_million_output_tokens": "0",
    }
    data.update(overrides)
    return data


def test_admin_stores_a_typed_key_and_never_shows_it(admin_client):
    response = admin_client.post("/admin/agents/agentprofile/add/", admin_form(api_key=KEY))
    assert response.status_code == 302, response.content.decode()[:2000]
    profile = AgentProfile.objects.get()
    assert profile.api_key_secret_ref == "agent.modelApiKey.support"
    assert get_active_secret_value("agent.modelApiKey.support") == KEY
    assert all(KEY.encode() not in bytes(s.ciphertext) for s in Secret.objects.all())
    change = f"/admin/agents/agentprofile/{profile.pk}/change/"
    page = admin_client.get(change).content.decode()
    assert KEY not in page and "set (key stored (agent.modelApiKey.support))" in page
    assert KEY not in admin_client.get("/admin/agents/agentprofile/").content.decode()
    # An empty key field keeps the key; a new one becomes a new version of the same ref.
    admin_client.post(change, admin_form(temperature="0.5"))
    assert get_active_secret_value("agent.modelApiKey.support") == KEY
    admin_client.post(change, admin_form(api_key="sk-second-key", api_key_secret_ref=""))
    profile.refresh_from_db()
    assert profile.api_key_secret_ref == "agent.modelApiKey.support"
    assert get_active_secret_value(profile.api_key_secret_ref) == "sk-second-key"
    for details in AuditEvent.objects.values_list("details", flat=True):
        assert KEY not in str(details) and "sk-second-key" not in str(details)


def test_admin_refuses_bad_runtime_settings_and_stores_no_key(admin_client):
    response = admin_client.post(
        "/admin/agents/agentprofile/add/",
        admin_form(api_key=KEY, model="", temperature="5", base_url="nope"),
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "The llm handler needs a model name." in page
    assert "Ensure this value is less than or equal to 2.0" in page
    assert "Base URL must be an http(s) URL" in page
    assert KEY not in page  # the password field is never rendered back
    assert not AgentProfile.objects.exists() and not Secret.objects.exists()


def test_admin_shows_not_set_without_a_key(admin_client):
    profile = AgentProfile.objects.create(agent_key="nokey", handler="llm", model="m")
    page = admin_client.get(f"/admin/agents/agentprofile/{profile.pk}/change/").content.decode()
    assert "not set (the llm handler needs an API key" in page


# Readiness ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields, stored, ok, reason",
    [
        ({}, False, True, "no key needed"),  # echo
        ({"handler": "llm", "model": "m"}, False, False, "the llm handler needs an API key"),
        ({"handler": "llm", "model": "m", "base_url": "http://127.0.0.1:11434/v1"}, False, True,
         "no key needed"),
        ({"handler": "llm", "model": "m", "api_key_secret_ref": "k.ref"}, False, False,
         "no active secret 'k.ref'"),
        ({"handler": "llm", "model": "m", "api_key_secret_ref": "k.ref"}, True, True,
         "key stored (k.ref)"),
    ],
)  # fmt: skip
def test_readiness_reports_the_model_key(db, fields, stored, ok, reason):
    from telegram.readiness import readiness

    AgentProfile.objects.create(agent_key="alpha", **fields)
    if stored:
        import_secret("k.ref", KEY, actor="t")
    item = readiness("alpha")["items"]["model_key_present"]
    assert item["ok"] is ok and item["reason"].startswith(reason)
    assert KEY not in json.dumps(readiness("alpha"))
