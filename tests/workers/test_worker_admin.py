"""The Worker admin: the columns an operator needs, drain (confirm + audit), cleanup link."""

from __future__ import annotations

import datetime as dt

from django.urls import reverse
from django.utils import timezone

from agents.models import AgentProfile, AuditEvent, Conversation
from workers.models import Worker

URL = "/admin/workers/worker/"


def test_list_shows_status_machine_heartbeat_age_and_assignment(admin_client, db):
    agent = AgentProfile.objects.create(agent_key="alpha")
    conversation = Conversation.objects.create(conversation_id="conv-42", agent=agent)
    Worker.objects.create(
        worker_id="w-fly",
        provider="fly",
        status="draining",
        machine_app="af-app",
        machine_id="m_77",
        machine_region="ams",
        heartbeat_at=timezone.now() - dt.timedelta(seconds=95),
        assigned_conversation=conversation,
    )
    Worker.objects.create(worker_id="w-local", provider="local", process_id=4321)
    html = admin_client.get(URL).content.decode()
    assert "af-app/m_77 ams" in html and "pid 4321" in html
    assert "draining" in html and "conv-42" in html
    assert any(f"{n} s" in html for n in (95, 96, 97)) and "never" in html


def test_drain_asks_for_confirmation_then_drains_and_audits(admin_client, db):
    worker = Worker.objects.create(worker_id="w-1", heartbeat_at=timezone.now())
    Worker.objects.create(worker_id="w-old", status="stopped")
    response = admin_client.post(
        URL, {"action": "drain", "_selected_action": [worker.pk]}, follow=True
    )
    assert b"Drain these workers?" in response.content and b"w-1" in response.content
    assert Worker.objects.get(pk=worker.pk).status == "active"  # nothing yet
    assert not AuditEvent.objects.filter(action="worker.drain").exists()
    response = admin_client.post(
        URL, {"action": "drain", "_selected_action": [worker.pk], "confirm": "yes"}, follow=True
    )
    assert b"1 worker(s) draining." in response.content
    worker.refresh_from_db()
    assert worker.status == "draining" and worker.status_reason == "drained by admin"
    audit = AuditEvent.objects.get(action="worker.drain")
    assert audit.actor == "admin"
    assert (audit.target_type, audit.target_id) == ("workers.worker", str(worker.pk))


def test_drain_ignores_workers_that_are_not_active(admin_client, db):
    stopped = Worker.objects.create(worker_id="w-old", status="stopped")
    admin_client.post(URL, {"action": "drain", "_selected_action": [stopped.pk], "confirm": "yes"})
    assert Worker.objects.get(pk=stopped.pk).status == "stopped"  # no way back
    assert not AuditEvent.objects.filter(action="worker.drain").exists()


def test_run_cleanup_action_leads_to_the_preview(admin_client, db):
    worker = Worker.objects.create(worker_id="w-1")
    response = admin_client.post(
        URL, {"action": "run_fly_cleanup", "_selected_action": [worker.pk]}
    )
    assert response.status_code == 302 and response["Location"] == reverse("admin:fly_cleanup_run")


def test_provider_settings_are_in_the_runtime_config_admin(admin_client, runtime_config):
    html = admin_client.get(
        reverse("admin:agents_runtimeconfig_change", args=[runtime_config.pk])
    ).content.decode()
    for field in (
        "provider_kind",
        "app_name",
        "image",
        "region",
        "fallback_regions",
        "volume_size_gb",
        "fly_cleanup_nightly",
        "max_workers",
        "spawn_step",
        "idle_timeout_seconds",
        "snapshot_timeout_seconds",
    ):
        assert f'name="{field}"' in html, field
