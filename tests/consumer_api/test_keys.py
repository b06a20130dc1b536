"""API keys: create_api_key, the admin (shown once, revocable), and the OpenAPI document."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from agents.consumer_api.models import ApiKey
from agents.models import AuditEvent
from agents.secret_refs import api_key_webhook_secret_ref
from agents.secret_store import get_active_secret_value

pytestmark = pytest.mark.django_db


def test_create_api_key_prints_the_key_once_as_json(world, capsys, api):
    call_command(
        "create_api_key",
        "host app",
        "--agent",
        "alpha",
        "--read-only",
        "--webhook-url",
        "https://host.example/hooks",
        "--json",
    )
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"id", "key", "prefix", "webhook_secret"}
    row = ApiKey.objects.get(pk=out["id"])
    assert (row.mode, row.tenant.slug) == ("read", "default")
    assert [a.agent_key for a in row.agents.all()] == ["alpha"]
    assert get_active_secret_value(api_key_webhook_secret_ref(row.prefix)) == out["webhook_secret"]
    assert out["key"] not in row.hashed_key
    assert api(out["key"]).get("/api/v1/agents/beta/").status_code == 404
    assert AuditEvent.objects.filter(action="consumer_api.create_key").exists()


def test_create_api_key_refuses_an_agent_of_another_tenant(world):
    with pytest.raises(CommandError, match="not found in tenant 'acme'"):
        call_command("create_api_key", "k", "--tenant", "acme", "--agent", "alpha")
    with pytest.raises(CommandError, match="Tenant 'nope' not found"):
        call_command("create_api_key", "k", "--tenant", "nope")
    assert not ApiKey.objects.exists()


def test_admin_creates_a_key_shows_it_once_and_revokes_it(world, admin_client, api):
    response = admin_client.post(
        "/admin/consumer_api/apikey/add/",
        {
            "name": "from admin",
            "tenant": world["alpha"].tenant_id,
            "mode": "read_write",
            "agents": [world["alpha"].pk],
        },
        follow=True,
    )
    assert response.status_code == 200
    row = ApiKey.objects.get(name="from admin")
    shown = [str(m) for m in response.context["messages"]]
    key = next(m.split(" is: ")[1].split(". ")[0] for m in shown if " is: " in m)
    assert api(key).get("/api/v1/agents/").status_code == 200
    changelist = admin_client.get("/admin/consumer_api/apikey/").content.decode()
    assert key not in changelist and row.prefix in changelist
    admin_client.post(
        f"/admin/consumer_api/apikey/{row.pk}/change/",
        {
            "name": "from admin",
            "tenant": row.tenant_id,
            "mode": "read_write",
            "agents": [world["alpha"].pk],
            "revoked": "on",
        },
    )
    row.refresh_from_db()
    assert row.revoked
    assert api(key).get("/api/v1/agents/").status_code == 401
    assert AuditEvent.objects.filter(action="consumer_api.revoke_key").exists()


def test_admin_refuses_agents_of_another_tenant(world, admin_client):
    response = admin_client.post(
        "/admin/consumer_api/apikey/add/",
        {
            "name": "bad",
            "tenant": world["alpha"].tenant_id,
            "mode": "read",
            "agents": [world["gamma"].pk],
        },
    )
    assert response.status_code == 200
    assert "Not agents of tenant" in response.content.decode()
    assert not ApiKey.objects.exists()


def test_schema_documents_both_apis_and_their_auth_schemes(world, make_key, api):
    response = api(make_key().key).get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    schema = response.json()
    schemes = schema["components"]["securitySchemes"]
    assert {"consumerApiKey", "workerToken"} <= set(schemes)
    assert schemes["consumerApiKey"]["in"] == "header"
    paths = set(schema["paths"])
    assert "/api/v1/worker/claim/" in paths
    for path in [
        "/api/v1/agents/",
        "/api/v1/pairings/",
        "/api/v1/bindings/resolve/",
        "/api/v1/users/{consumer_user_id}/agents/{agent_key}/messages/",
        "/api/v1/usage/",
    ]:
        assert path in paths, path
    send = schema["paths"]["/api/v1/users/{consumer_user_id}/agents/{agent_key}/messages/"]
    assert send["post"]["security"] == [{"consumerApiKey": []}]
    assert {"202", "400", "401", "403", "404", "409", "429"} <= set(send["post"]["responses"])


def test_an_expired_key_answers_401(world, make_key, api):
    import datetime as dt

    from django.utils import timezone

    created = make_key()
    ApiKey.objects.filter(pk=created.api_key.pk).update(
        expiry_date=timezone.now() - dt.timedelta(minutes=1)
    )
    assert api(created.key).get("/api/v1/agents/").status_code == 401


def test_idempotency_records_leave_after_24_hours(world, make_key):
    import datetime as dt

    from django.utils import timezone

    from agents.consumer_api.models import IdempotencyRecord
    from agents.consumer_api.services import expire_idempotency_records

    api_key = make_key().api_key
    old = IdempotencyRecord.objects.create(
        api_key=api_key,
        key="old",
        fingerprint="f",
        status_code=202,
        created_at=timezone.now() - dt.timedelta(hours=25),
    )
    IdempotencyRecord.objects.create(api_key=api_key, key="new", fingerprint="f", status_code=202)
    assert expire_idempotency_records() == 1
    assert not IdempotencyRecord.objects.filter(pk=old.pk).exists()
    assert IdempotencyRecord.objects.filter(key="new").exists()
