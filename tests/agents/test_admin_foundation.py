"""The admin shell of the ground floor: write-only secrets, audited changes, read-only
audit trail, staff only."""

from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission

from agents.admin import AuditedModelAdmin
from agents.models import (
    AgentProfile,
    AuditEvent,
    Conversation,
    ConversationEntry,
    RuntimeConfig,
    Secret,
)
from agents.secret_store import get_active_secret_value, import_secret

VALUE = "admin-typed-secret-VALUE-42"


# Secrets ---------------------------------------------------------------------------------


def test_secret_list_shows_ref_version_active_updated(admin_client):
    import_secret("list.ref", VALUE, actor="t")
    import_secret("list.ref", VALUE + "2", actor="t")
    content = admin_client.get("/admin/agents/secret/").content.decode()
    for header in ("column-secret_ref", "column-version", "column-active", "column-updated_at"):
        assert header in content
    assert content.count("list.ref") >= 2  # both versions listed
    assert VALUE not in content


def test_secret_value_field_is_write_only(admin_client):
    content = admin_client.get("/admin/agents/secret/add/").content.decode()
    [value_input] = re.findall(r"<input[^>]*name=\"value\"[^>]*>", content)
    assert 'type="password"' in value_input and "value=" not in value_input.replace(
        'name="value"', ""
    )
    secret = import_secret("ro.ref", VALUE, actor="t")
    content = admin_client.get(f"/admin/agents/secret/{secret.pk}/change/").content.decode()
    assert 'name="value"' not in content and VALUE not in content
    assert "/admin/agents/secret/add/?secret_ref=ro.ref" in content  # how to set a new one
    prefilled = admin_client.get("/admin/agents/secret/add/?secret_ref=ro.ref").content.decode()
    assert 'value="ro.ref"' in prefilled


def test_admin_sets_a_new_version_and_audits(admin_client):
    first = import_secret("bot.token", "old-value", actor="t")
    response = admin_client.post(
        "/admin/agents/secret/add/", {"secret_ref": "bot.token", "value": VALUE}, follow=True
    )
    assert response.status_code == 200
    assert "was added successfully" in response.content.decode()
    assert get_active_secret_value("bot.token") == VALUE
    first.refresh_from_db()
    assert not first.active
    new = Secret.objects.get(secret_ref="bot.token", active=True)
    assert new.version == 2 and new.metadata == {"source": "admin"}
    event = AuditEvent.objects.get(action="secret.import", actor="admin")
    assert event.details == {"secret_ref": "bot.token", "version": 2}
    assert LogEntry.objects.get().object_id == str(new.pk)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"secret_ref": "blank.ref", "value": "   "}, "Refusing to store an empty value"),
        ({"secret_ref": "blank.ref", "value": ""}, "This field is required"),
        ({"secret_ref": "bad ref", "value": VALUE}, "Secret ref must be"),
        ({"secret_ref": "big.ref", "value": "x" * (64 * 1024 + 1)}, "larger than 64 KiB"),
    ],
)
def test_admin_secret_bad_input_changes_nothing(admin_client, data, message):
    response = admin_client.post("/admin/agents/secret/add/", data)
    content = response.content.decode()
    assert response.status_code == 200 and message in content
    assert "added successfully" not in content and VALUE not in content
    assert Secret.objects.count() == 0
    assert AuditEvent.objects.count() == 0 and LogEntry.objects.count() == 0


def test_existing_secret_versions_are_immutable(admin_client):
    secret = import_secret("ro", VALUE, actor="t")
    response = admin_client.post(
        f"/admin/agents/secret/{secret.pk}/change/", {"secret_ref": "changed", "active": ""}
    )
    assert response.status_code == 403
    secret.refresh_from_db()
    assert (secret.secret_ref, secret.active) == ("ro", True)


def test_secret_delete_is_audited(admin_client):
    one = import_secret("del.one", VALUE, actor="t")
    two = import_secret("del.two", VALUE, actor="t")
    admin_client.post(f"/admin/agents/secret/{one.pk}/delete/", {"post": "yes"})
    admin_client.post(
        "/admin/agents/secret/",
        {"action": "delete_selected", "_selected_action": [two.pk], "post": "yes"},
    )
    assert Secret.objects.count() == 0
    events = AuditEvent.objects.filter(action="secret.delete", actor="admin")
    assert sorted(e.details["secret_ref"] for e in events) == ["del.one", "del.two"]
    assert all(e.details["was_active"] for e in events)


# Agent profiles --------------------------------------------------------------------------


def profile_form(initial_refs: str = "[]", **overrides) -> dict:
    # JSON fields with a callable default post a hidden "initial-" copy, as a browser does.
    data = {
        "agent_key": "support",
        "secrets_ref": '["openai.key"]',
        "initial-secrets_ref": initial_refs,
        "bridge_config": "{}",
        "initial-bridge_config": "{}",
        "enabled": "on",
        "handler": "echo",
        "delivery": "server",
        "timeout_seconds": "120",
        "price_per_million_input_tokens": "0",
        "price_per_million_output_tokens": "0",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def test_admin_profile_add_change_delete_are_audited(admin_client):
    response = admin_client.post("/admin/agents/agentprofile/add/", profile_form())
    assert response.status_code == 302
    profile = AgentProfile.objects.get()
    assert profile.version == 1 and profile.secrets_ref == ["openai.key"]
    change = f"/admin/agents/agentprofile/{profile.pk}/change/"
    current = '["openai.key"]'
    admin_client.post(change, profile_form(current, enabled=None))  # unticked
    profile.refresh_from_db()
    assert not profile.enabled and profile.version == 2
    admin_client.post(change, profile_form(current, enabled=None))  # saved without a change
    profile.refresh_from_db()
    assert profile.version == 2
    admin_client.post(f"/admin/agents/agentprofile/{profile.pk}/delete/", {"post": "yes"})
    assert not AgentProfile.objects.exists()
    events = list(AuditEvent.objects.order_by("pk").values_list("actor", "action", "details"))
    assert [(a, b) for a, b, _ in events] == [
        ("admin", "agent.create"),
        ("admin", "agent.update"),
        ("admin", "agent.delete"),
    ]
    assert events[1][2]["changed"] == ["enabled"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"agent_key": "Not A Slug"}, "Agent key must be a slug"),
        ({"bridge_config": '{"colour": 1}'}, "Unknown bridge config key(s): colour"),
        ({"bridge_config": '{"enabled": true}'}, "needs &#x27;base_url&#x27;"),
        ({"bridge_config": "{broken"}, "Enter a valid JSON"),
        ({"secrets_ref": '["bad ref"]'}, "Secret ref must be"),
    ],
)
def test_admin_profile_bad_input_changes_nothing(admin_client, overrides, message):
    response = admin_client.post("/admin/agents/agentprofile/add/", profile_form(**overrides))
    assert response.status_code == 200 and message in response.content.decode()
    assert not AgentProfile.objects.exists() and not AuditEvent.objects.exists()


# Runtime config --------------------------------------------------------------------------


def runtime_form(config: RuntimeConfig, **overrides) -> dict:
    from django.forms.models import model_to_dict

    data = model_to_dict(config)
    data.pop("id")
    data["fallback_regions"] = data["initial-fallback_regions"] = "[]"
    # As a browser sends it: unticked boxes and empty optional fields are left out.
    data = {k: ("on" if v is True else v) for k, v in data.items() if v not in (False, None)}
    data.update(overrides)
    return data


def test_admin_runtime_config_change_is_audited(admin_client, runtime_config):
    response = admin_client.get("/admin/agents/runtimeconfig/")
    assert response.status_code == 302 and response["Location"].endswith("/1/change/")
    url = "/admin/agents/runtimeconfig/1/change/"
    response = admin_client.post(url, runtime_form(runtime_config, max_workers=9))
    assert response.status_code == 302
    assert RuntimeConfig.objects.get().max_workers == 9
    event = AuditEvent.objects.get()
    assert (event.actor, event.action, event.details) == (
        "admin",
        "runtime_config.update",
        {"changed": ["max_workers"]},
    )


@pytest.mark.parametrize(
    "field, value", [("lease_seconds", 0), ("max_attempts", 0), ("retry_max_seconds", 0.5)]
)
def test_admin_runtime_config_bad_values_change_nothing(admin_client, runtime_config, field, value):
    runtime_config.retry_base_seconds = 1.0
    url = "/admin/agents/runtimeconfig/1/change/"
    response = admin_client.post(url, runtime_form(runtime_config, **{field: value}))
    assert response.status_code == 200 and b"errornote" in response.content
    fresh = RuntimeConfig.objects.get()
    assert getattr(fresh, field) == getattr(runtime_config, field)
    assert not AuditEvent.objects.exists()


def test_runtime_config_cannot_be_added_or_deleted(admin_client, runtime_config):
    assert admin_client.get("/admin/agents/runtimeconfig/add/").status_code == 403
    assert admin_client.post("/admin/agents/runtimeconfig/1/delete/").status_code == 403
    assert RuntimeConfig.objects.count() == 1


# Audit trail -----------------------------------------------------------------------------


def test_audit_events_are_read_only(admin_client):
    import_secret("audited", VALUE, actor="t")
    event = AuditEvent.objects.get()
    assert "secret.import" in admin_client.get("/admin/agents/auditevent/").content.decode()
    page = admin_client.get(f"/admin/agents/auditevent/{event.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert admin_client.get("/admin/agents/auditevent/add/").status_code == 403
    response = admin_client.post(
        f"/admin/agents/auditevent/{event.pk}/change/", {"actor": "someone-else"}
    )
    assert response.status_code == 403
    assert admin_client.post(f"/admin/agents/auditevent/{event.pk}/delete/").status_code == 403
    admin_client.post(
        "/admin/agents/auditevent/",
        {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"},
    )
    event.refresh_from_db()
    assert event.actor == "t"


def test_conversation_delete_is_audited(admin_client, alpha_agent):
    conversation = Conversation.objects.create(conversation_id="conv-1", agent=alpha_agent)
    ConversationEntry.objects.create(conversation=conversation, role="user", content="hi")
    admin_client.post(f"/admin/agents/conversation/{conversation.pk}/delete/", {"post": "yes"})
    assert not Conversation.objects.exists()
    event = AuditEvent.objects.get(action="conversation.delete")
    assert event.actor == "admin" and event.target_id == str(conversation.pk)


def test_every_writable_agents_admin_audits():
    from agents.admin_access import ReadOnlyAdminMixin

    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label != "agents" or model is AuditEvent:
            continue
        if isinstance(model_admin, ReadOnlyAdminMixin) and not model_admin.deletable:
            continue  # nothing an admin can write (external API errors)
        assert isinstance(model_admin, AuditedModelAdmin), model


# Staff only ------------------------------------------------------------------------------

PAGES = [
    "/admin/",
    "/admin/agents/agentprofile/",
    "/admin/agents/agentprofile/add/",
    "/admin/agents/secret/",
    "/admin/agents/secret/add/",
    "/admin/agents/runtimeconfig/",
    "/admin/agents/auditevent/",
]


def test_anonymous_and_non_staff_are_sent_to_login(client, django_user_model):
    for page in PAGES:
        response = client.get(page)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], page
    django_user_model.objects.create_user("bob", password="pw")
    client.login(username="bob", password="pw")
    for page in PAGES:
        response = client.get(page)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], page
    response = client.post("/admin/agents/secret/add/", {"secret_ref": "x", "value": VALUE})
    assert response.status_code == 302 and not Secret.objects.exists()


def test_staff_without_permission_is_refused(client, django_user_model):
    user = django_user_model.objects.create_user("carol", password="pw", is_staff=True)
    client.login(username="carol", password="pw")
    assert client.get("/admin/agents/secret/").status_code == 403
    assert (
        client.post("/admin/agents/secret/add/", {"secret_ref": "x", "value": VALUE}).status_code
        == 403
    )
    assert not Secret.objects.exists()
    user.user_permissions.add(Permission.objects.get(codename="view_secret"))
    assert client.get("/admin/agents/secret/").status_code == 200
    assert client.get("/admin/agents/secret/add/").status_code == 403
