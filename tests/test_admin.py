"""The admin: every page renders for staff only; destructive actions confirm and audit."""

from __future__ import annotations

import pytest
import responses
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from agents.models import AgentProfile, AuditEvent
from agents.secret_store import import_secret
from telegram.models import Bot, IdentityBinding
from workers.models import Message, Worker


@pytest.fixture
def world(db, enqueue):
    agent = AgentProfile.objects.create(agent_key="alpha")
    import_secret(
        "telegram.botToken.alpha",
        "100:TOKEN-abcdefghij",
        actor="t",
        metadata={"bot_identity": "100"},
    )
    Bot.objects.create(agent=agent, bot_identity="100", username="alpha_bot")
    IdentityBinding.objects.create(
        consumer_user_id="u1",
        agent=agent,
        conversation_id="c",
        bot_identity="100",
        source="telegram_pairing",
    )
    message = enqueue("c1", "alpha")
    Message.objects.filter(pk=message.pk).update(
        status="dead_letter", attempts=5, last_error="boom"
    )
    Worker.objects.create(worker_id="w1", heartbeat_at=timezone.now())
    return agent


def test_every_changelist_and_add_page_renders(admin_client, world):
    for model in admin.site._registry:
        info = (model._meta.app_label, model._meta.model_name)
        response = admin_client.get(reverse("admin:{}_{}_changelist".format(*info)), follow=True)
        assert response.status_code == 200, info
        for obj in model._default_manager.all()[:2]:
            change = reverse("admin:{}_{}_change".format(*info), args=[obj.pk])
            assert admin_client.get(change, follow=True).status_code == 200, change
    assert admin_client.get("/admin/").status_code == 200


def test_dashboard_shows_queue_depth(admin_client, world):
    content = admin_client.get("/admin/").content.decode()
    assert "queue-dashboard" in content and "dead letters" in content and "boom" in content


def test_non_staff_cannot_enter(client, django_user_model, world):
    django_user_model.objects.create_user("bob", password="pw")
    client.login(username="bob", password="pw")
    response = client.get("/admin/workers/message/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_requeue_dead_letters_needs_confirmation(admin_client, world):
    message = Message.objects.get()
    url = "/admin/workers/message/"
    body = {"action": "requeue", "_selected_action": [message.pk]}
    response = admin_client.post(url, body)
    assert response.status_code == 200 and b"Yes, I" in response.content
    assert Message.objects.get().status == "dead_letter"
    admin_client.post(url, {**body, "confirm": "yes"})
    message.refresh_from_db()
    assert message.status == "queued" and message.attempts == 0
    assert AuditEvent.objects.filter(action="queue.requeue_dead_letters", actor="admin").exists()


def test_drain_worker_action(admin_client, world):
    worker = Worker.objects.get()
    body = {"action": "drain", "_selected_action": [worker.pk], "confirm": "yes"}
    admin_client.post("/admin/workers/worker/", body)
    worker.refresh_from_db()
    assert worker.status == "draining" and worker.status_reason == "drained by admin"
    assert AuditEvent.objects.filter(action="worker.drain").exists()


def test_revoke_binding_confirms_and_audits(admin_client, world):
    binding = IdentityBinding.objects.get()
    url = "/admin/telegram/identitybinding/"
    body = {"action": "revoke", "_selected_action": [binding.pk]}
    assert b"Yes, I" in admin_client.post(url, body).content
    assert IdentityBinding.objects.get().status == "active"
    admin_client.post(url, {**body, "confirm": "yes"})
    assert IdentityBinding.objects.get().status == "revoked"
    assert AuditEvent.objects.filter(action="telegram.revoke_binding", actor="admin").exists()


def test_soft_reset_preview_writes_nothing(admin_client, world):
    IdentityBinding.objects.create(
        consumer_user_id="legacy",
        agent=world,
        conversation_id="x",
        bot_identity=None,
        source="telegram_pairing",
    )
    binding = IdentityBinding.objects.get(consumer_user_id="legacy")
    body = {"action": "soft_reset", "_selected_action": [binding.pk]}
    response = admin_client.post("/admin/telegram/identitybinding/", body)
    assert b"legacy_bindings_missing_bot_identity" in response.content
    assert IdentityBinding.objects.get(pk=binding.pk).status == "active"
    admin_client.post(
        "/admin/telegram/identitybinding/", {**body, "confirm": "yes", "revoke_bindings": "on"}
    )
    assert IdentityBinding.objects.get(pk=binding.pk).status == "revoked"


def test_worker_admin_never_shows_token_hash(admin_client, world):
    from workers.tokens import mint_worker_token

    worker = Worker.objects.get()
    mint_worker_token(worker)
    worker.refresh_from_db()
    content = admin_client.get(f"/admin/workers/worker/{worker.pk}/change/").content.decode()
    assert worker.token_hash not in content


def test_onboarding_page_shows_readiness_and_pairing_qr(admin_client, world):
    url = reverse("admin:telegram_onboarding", args=[world.pk])
    response = admin_client.get(url)
    assert response.status_code == 200 and b"Next action" in response.content
    assert b"TOKEN-abcdefghij" not in response.content
    response = admin_client.post(
        url, {"step": "create_pairing", "consumer_user_id": "u9", "ttl_minutes": 15}
    )
    assert b"https://t.me/alpha_bot?start=" in response.content and b"<svg" in response.content


@responses.activate
def test_fly_cleanup_preview_then_confirm(admin_client, world, settings):
    from agents.models import RuntimeConfig

    settings.FLY_API_TOKEN = "fly-token"
    RuntimeConfig.get()
    RuntimeConfig.objects.filter(pk=1).update(provider_kind="fly", app_name="af")
    base = "http://fly.test/v1/apps/af"
    responses.get(base, json={})
    responses.get(f"{base}/machines", json=[{"id": "m1"}])
    responses.get(f"{base}/volumes", json=[])
    response = admin_client.get(reverse("admin:fly_cleanup_run"))
    assert b"Dry run" in response.content and b"m1" in response.content
    assert not any(c.request.method == "DELETE" for c in responses.calls)
    responses.post(f"{base}/machines/m1/cordon", json={})
    responses.post(f"{base}/machines/m1/stop", json={})
    responses.delete(f"{base}/machines/m1")
    responses.get(f"{base}/machines", json=[])
    responses.get(f"{base}/volumes", json=[])
    admin_client.post(reverse("admin:fly_cleanup_run"), {"app": "af", "confirm": "yes"})
    assert AuditEvent.objects.filter(action="fly.cleanup", actor="admin").exists()


def test_lists_the_system_writes_are_read_only(rf, admin_user):
    """One mixin (agents.admin_access.ReadOnlyAdminMixin): no add, no change; audit records
    cannot be deleted either, the others only with Django's delete permission."""
    from agents.admin_access import ReadOnlyAdminMixin

    request = rf.get("/admin/")
    request.user = admin_user
    read_only = {
        model._meta.label: model_admin
        for model, model_admin in admin.site._registry.items()
        if isinstance(model_admin, ReadOnlyAdminMixin)
    }
    assert set(read_only) == {
        "agents.AuditEvent",
        "agents.ExternalApiError",
        "agents.GlobalSkillRelease",
        "fly.FlyCleanupRun",
        "telegram.TelegramUpdate",
        "telegram.IngressIssue",
        "telegram.SandboxMessage",
        "workers.JobUsage",
        "pushing.PushBroadcast",
        "consumer_api.IdempotencyRecord",
        "telegram.OutboxMessage",
        "consumer_api.EventDelivery",
    }
    for label, model_admin in read_only.items():
        assert not model_admin.has_add_permission(request), label
        assert not model_admin.has_change_permission(request), label
        deletable = label not in {
            "agents.AuditEvent",
            "agents.ExternalApiError",
            "fly.FlyCleanupRun",
            "workers.JobUsage",
        }
        assert model_admin.has_delete_permission(request) is deletable, label
