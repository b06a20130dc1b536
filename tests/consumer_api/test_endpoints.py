"""The consumer API per endpoint: answers, field errors, auth, scope, read-only keys."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from agents.consumer_api.models import ApiKey
from agents.consumer_api.services import revoke_api_key
from agents.models import Conversation, ConversationEntry
from telegram.models import IdentityBinding, PairingCode
from tests.consumer_api.conftest import V1, bind
from workers.models import DataSnapshot, JobUsage, Message

pytestmark = pytest.mark.django_db


# Authentication -------------------------------------------------------------------------


def test_no_key_answers_401_in_the_error_shape(world, api):
    response = api().get(V1 + "agents/")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response["WWW-Authenticate"] == "Api-Key"


def test_unknown_and_revoked_keys_answer_401(world, make_key, api):
    created = make_key()
    assert api(created.key).get(V1 + "agents/").status_code == 200
    assert api(created.key + "x").get(V1 + "agents/").status_code == 401
    revoke_api_key(created.api_key, actor="test")
    response = api(created.key).get(V1 + "agents/")
    assert response.status_code == 401
    assert created.key not in response.content.decode()


def test_a_request_records_last_used_time(world, make_key, api):
    created = make_key()
    assert created.api_key.last_used_at is None
    api(created.key).get(V1 + "agents/")
    created.api_key.refresh_from_db()
    assert created.api_key.last_used_at is not None


def test_only_the_hash_is_stored(world, make_key):
    created = make_key()
    row = ApiKey.objects.get(pk=created.api_key.pk)
    assert created.key not in (row.id + row.hashed_key)
    assert created.key.startswith(row.prefix + ".")


def test_a_read_key_may_read_but_not_write(world, make_key, api):
    reader = api(make_key(read_only=True).key)
    assert reader.get(V1 + "agents/").status_code == 200
    response = reader.post(
        V1 + "pairings/", {"consumer_user_id": "u1", "agent_key": "alpha"}, format="json"
    )
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "detail": "This API key is read-only."}
    assert not PairingCode.objects.exists()


def test_throttled_per_key_with_retry_after(world, make_key, api, settings):
    settings.CONSUMER_API_THROTTLE_RATE = "2/min"
    client, other = api(make_key().key), api(make_key().key)
    assert [client.get(V1 + "agents/").status_code for _ in range(2)] == [200, 200]
    response = client.get(V1 + "agents/")
    assert response.status_code == 429
    assert response.json()["error"] == "throttled"
    assert response.json()["retry_after"] >= 1
    assert other.get(V1 + "agents/").status_code == 200  # another key has its own budget


# Agents -----------------------------------------------------------------------------------


def test_agents_in_scope_only(world, make_key, api):
    everything = api(make_key().key).get(V1 + "agents/").json()
    assert [a["agent_key"] for a in everything["results"]] == ["alpha", "beta"]
    assert everything["next"] is None
    narrowed = api(make_key(agents=["alpha"]).key)
    assert [a["agent_key"] for a in narrowed.get(V1 + "agents/").json()["results"]] == ["alpha"]
    assert narrowed.get(V1 + "agents/beta/").status_code == 404
    assert narrowed.get(V1 + "agents/gamma/").status_code == 404
    assert narrowed.get(V1 + "agents/beta/readiness/").status_code == 404
    assert narrowed.get(V1 + "agents/alpha/").json()["bot_identity"] == "1000"


def test_agent_filter_ordering_and_bad_filter(world, rw):
    world["beta"].enabled = False
    world["beta"].save()
    keys = [a["agent_key"] for a in rw.get(V1 + "agents/?enabled=true").json()["results"]]
    assert keys == ["alpha"]
    desc = rw.get(V1 + "agents/?ordering=-agent_key").json()["results"]
    assert [a["agent_key"] for a in desc] == ["beta", "alpha"]
    response = rw.get(V1 + "agents/?enabled=maybe")
    assert response.status_code == 400
    assert response.json()["fields"] == {"enabled": ["Must be true or false."]}


def test_readiness(world, rw):
    body = rw.get(V1 + "agents/alpha/readiness/").json()
    assert body["agent_key"] == "alpha"
    assert body["next_action"] == "import_token"
    assert body["items"]["bot_identity_known"]["ok"] is True


# Pairings and bindings ---------------------------------------------------------------------


def test_pairing_create_and_poll(world, rw):
    response = rw.post(
        V1 + "pairings/",
        {"consumer_user_id": "u1", "agent_key": "alpha", "ttl_minutes": 5},
        format="json",
    )
    assert response.status_code == 201
    body = response.json()
    assert body["deep_link"] == f"https://t.me/alpha_bot?start={body['code']}"
    assert body["qr_svg"].lstrip().startswith("<?xml")
    poll = rw.get(V1 + f"pairings/{body['code']}/").json()
    assert poll["status"] == "pending"
    assert (poll["consumer_user_id"], poll["agent_key"]) == ("u1", "alpha")
    PairingCode.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert rw.get(V1 + f"pairings/{body['code']}/").json()["status"] == "expired"
    assert rw.get(V1 + "pairings/NOPE123456/").status_code == 404


def test_pairing_field_errors(world, rw):
    response = rw.post(V1 + "pairings/", {"agent_key": "alpha", "ttl_minutes": 0}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_request"
    assert set(body["fields"]) == {"consumer_user_id", "ttl_minutes"}
    out_of_scope = rw.post(
        V1 + "pairings/", {"consumer_user_id": "u1", "agent_key": "gamma"}, format="json"
    )
    assert out_of_scope.status_code == 404


def test_bind_resolve_list_revoke(world, rw):
    binding = bind(rw)
    assert (binding["source"], binding["status"], binding["telegram_chat_id"]) == (
        "api",
        "active",
        "55",
    )
    resolved = rw.get(V1 + "bindings/resolve/?bot_identity=1000&telegram_user_id=55").json()
    assert resolved["id"] == binding["id"]
    listed = rw.get(V1 + "users/u1/agents/?active=true").json()["results"]
    assert [b["id"] for b in listed] == [binding["id"]]
    revoked = rw.delete(V1 + f"bindings/{binding['id']}/")
    assert revoked.status_code == 200
    assert revoked.json()["status"] == "revoked"
    assert rw.get(V1 + "users/u1/agents/?active=true").json()["results"] == []
    assert rw.get(V1 + "users/u1/agents/?active=false").json()["results"][0]["status"] == "revoked"
    gone = rw.get(V1 + "bindings/resolve/?bot_identity=1000&telegram_user_id=55")
    assert gone.status_code == 404


def test_binding_field_errors(world, rw):
    response = rw.post(
        V1 + "bindings/",
        {"consumer_user_id": "", "agent_key": "alpha", "telegram_user_id": "abc"},
        format="json",
    )
    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"consumer_user_id", "telegram_user_id"}
    response = rw.get(V1 + "bindings/resolve/?bot_identity=1000")
    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"telegram_user_id"}
    assert not IdentityBinding.objects.exists()


def test_two_tenants_keep_the_same_consumer_id_apart(world, make_key, api):
    default, acme = api(make_key().key), api(make_key(tenant="acme").key)
    bind(default, user="u1", agent="alpha", tg="55")
    bind(acme, user="u1", agent="gamma", tg="66")
    # "1 user -> 1 bot" holds within a tenant: the acme binding did not revoke default's.
    assert IdentityBinding.objects.filter(status="active").count() == 2
    mine = default.get(V1 + "users/u1/agents/").json()["results"]
    theirs = acme.get(V1 + "users/u1/agents/").json()["results"]
    assert [b["agent_key"] for b in mine] == ["alpha"]
    assert [b["agent_key"] for b in theirs] == ["gamma"]
    # Within one tenant a second binding still replaces the first.
    bind(default, user="u1", agent="beta", tg="57")
    active = IdentityBinding.objects.filter(status="active", consumer_user_id="u1")
    assert sorted(b.agent.agent_key for b in active) == ["beta", "gamma"]


def test_overview(world, rw):
    bind(rw)
    rw.post(V1 + "users/u1/agents/alpha/messages/", {"text": "hello"}, format="json")
    body = rw.get(V1 + "users/u1/overview/").json()
    assert body["active_binding"]["agent_key"] == "alpha"
    assert body["last_message"]["text"] == "hello"
    assert body["pairing"] is None
    assert body["usage_this_month"]["input_tokens"] == 0


# Sending, conversations, queue items ---------------------------------------------------------


def test_send_enqueues_for_the_users_agent(world, rw):
    bind(rw)
    response = rw.post(V1 + "users/u1/agents/alpha/messages/", {"text": "hi"}, format="json")
    assert response.status_code == 202
    message = Message.objects.get(pk=response.json()["message_id"])
    assert response.json()["conversation_id"] == "user-agent:alpha:u1"
    assert message.payload["message_text"] == "hi"
    assert message.payload["metadata"]["telegram_chat_id"] == "55"
    assert message.payload["metadata"]["source"] == "api"


def test_send_without_binding_or_with_bad_body(world, rw):
    response = rw.post(V1 + "users/u1/agents/alpha/messages/", {"text": "hi"}, format="json")
    assert response.status_code == 404
    bind(rw)
    for body in ({}, {"text": "a", "template": "b"}):
        response = rw.post(V1 + "users/u1/agents/alpha/messages/", body, format="json")
        assert response.status_code == 400
        assert "text" in response.json()["fields"]
    response = rw.post(V1 + "users/u1/agents/alpha/messages/", {"template": "nope"}, format="json")
    assert response.json()["fields"] == {
        "template": ["Message template 'nope' not found or disabled."]
    }
    assert not Message.objects.exists()


def test_send_a_message_template_counts_its_use(world, rw):
    from agents.pushing.models import MessageTemplate

    template = MessageTemplate.objects.create(slug="welcome", title="Welcome", text="Hello there")
    bind(rw)
    response = rw.post(
        V1 + "users/u1/agents/alpha/messages/", {"template": "welcome"}, format="json"
    )
    assert response.status_code == 202
    assert Message.objects.get().payload["message_text"] == "Hello there"
    template.refresh_from_db()
    assert template.usage_count == 1


def test_idempotent_send(world, rw):
    bind(rw)
    url = V1 + "users/u1/agents/alpha/messages/"
    first = rw.post(url, {"text": "hi"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = rw.post(url, {"text": "hi"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Message.objects.count() == 1
    conflict = rw.post(url, {"text": "other"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "idempotency_conflict"
    assert Message.objects.count() == 1
    rw.post(url, {"text": "hi"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert Message.objects.count() == 2


def test_an_idempotency_key_expires_after_24_hours(world, rw):
    from agents.consumer_api.models import IdempotencyRecord

    bind(rw)
    url = V1 + "users/u1/agents/alpha/messages/"
    rw.post(url, {"text": "hi"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    IdempotencyRecord.objects.update(created_at=timezone.now() - dt.timedelta(hours=25))
    rw.post(url, {"text": "hi"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert Message.objects.count() == 2


def test_conversation_history_and_queue_items(world, rw):
    bind(rw)
    sent = rw.post(V1 + "users/u1/agents/alpha/messages/", {"text": "hi"}, format="json").json()
    conversation = Conversation.objects.get(conversation_id=sent["conversation_id"])
    ConversationEntry.objects.create(conversation=conversation, role="user", content="hi")
    ConversationEntry.objects.create(conversation=conversation, role="assistant", content="yo")
    history = rw.get(V1 + f"conversations/{sent['conversation_id']}/").json()
    assert history["agent_key"] == "alpha"
    assert [e["content"] for e in history["results"]] == ["yo", "hi"]
    items = rw.get(V1 + f"conversations/{sent['conversation_id']}/messages/").json()["results"]
    assert [(i["message_id"], i["status"]) for i in items] == [(sent["message_id"], "queued")]
    queued = rw.get(V1 + f"conversations/{sent['conversation_id']}/messages/?status=done")
    assert queued.json()["results"] == []
    bad = rw.get(V1 + f"conversations/{sent['conversation_id']}/messages/?status=nope")
    assert bad.status_code == 400 and "status" in bad.json()["fields"]
    assert rw.get(V1 + "conversations/missing/").status_code == 404


def test_pagination_is_stable_under_inserts(world, rw):
    """Pages of two, with a row inserted between pages: no row repeats, none is skipped."""
    seen = []
    url = V1 + "snapshots/?page_size=2"
    for n in range(5):
        DataSnapshot.objects.create(
            agent_key="alpha", worker_id="w", conversation_id=f"c{n}", reason="manual"
        )
    page = rw.get(url).json()
    seen += [s["id"] for s in page["results"]]
    # Rows inserted after the first page never shift the next ones.
    DataSnapshot.objects.create(
        agent_key="alpha", worker_id="w", conversation_id="x", reason="manual"
    )
    while page["next"]:
        page = rw.get(page["next"]).json()
        seen += [s["id"] for s in page["results"]]
    expected = list(
        DataSnapshot.objects.exclude(conversation_id="x")
        .order_by("-id")
        .values_list("id", flat=True)
    )
    assert seen == expected


def test_snapshots_filtered_and_scoped(world, make_key, api):
    DataSnapshot.objects.create(
        agent_key="alpha", worker_id="w", conversation_id="c1", reason="drain"
    )
    DataSnapshot.objects.create(
        agent_key="beta", worker_id="w", conversation_id="c2", reason="drain"
    )
    client = api(make_key(agents=["alpha"]).key)
    rows = client.get(V1 + "snapshots/").json()["results"]
    assert [r["conversation_id"] for r in rows] == ["c1"]
    assert client.get(V1 + "snapshots/?conversation_id=c2").json()["results"] == []


def test_usage_for_a_month(world, rw, enqueue):
    message = enqueue("c-1", "alpha")
    for agent_key, user, tokens in [("alpha", "u1", 10), ("gamma", "u1", 99)]:
        JobUsage.objects.create(
            message=message,
            agent_key=agent_key,
            consumer_user=user,
            input_tokens=tokens,
            output_tokens=1,
            cost_usd="0.5",
            outcome="done",
        )
    month = timezone.now().strftime("%Y-%m")
    body = rw.get(V1 + f"usage/?month={month}&consumer_user_id=u1").json()
    assert [(r["agent_key"], r["input_tokens"]) for r in body["results"]] == [("alpha", 10)]
    assert rw.get(V1 + "usage/?month=2026-13").json()["fields"]["month"]
    assert rw.get(V1 + "usage/?agent_key=gamma").status_code == 404
    assert rw.get(V1 + "usage/?month=2001-01").json()["results"] == []


def test_odd_path_and_query_values_are_client_errors(world, rw):
    # Found by schemathesis: "²".isdigit() is true (int() then failed: 500), and PostgreSQL
    # refuses NUL in text (a DatabaseError: 503).
    for path in ("bindings/²/", "push-jobs/²/", "broadcasts/²/", "bindings/-1/"):
        assert rw.get(V1 + path).status_code in (404, 405), path
    assert rw.delete(V1 + "bindings/²/").status_code == 404
    response = rw.get(V1 + "bindings/resolve/", {"bot_identity": "1\x00", "telegram_user_id": "5"})
    assert response.status_code == 400
    assert response.json()["fields"] == {"bot_identity": ["Null characters are not allowed."]}
    assert rw.get(V1 + "agents/al%00pha/").status_code == 404
