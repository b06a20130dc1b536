"""Queue admin: filters, dead-letter and expired-lease views, requeue with confirmation."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from agents.models import AuditEvent
from workers.dashboard import dashboard_data
from workers.models import Message, Worker


@pytest.fixture
def queue(alpha_agent, beta_agent, enqueue):
    queued = enqueue("conv-a", "alpha", "first")
    dead = enqueue("conv-b", "beta", "second")
    Message.objects.filter(pk=dead.pk).update(status="dead_letter", attempts=5, last_error="boom")
    stuck = enqueue("conv-c", "alpha", "third")
    Message.objects.filter(pk=stuck.pk).update(
        status="processing",
        lease_id="l",
        claimed_by="w-gone",
        lease_expires_at=timezone.now() - dt.timedelta(minutes=1),
    )
    return queued, dead, stuck


def ids_on(admin_client, url):
    response = admin_client.get(url)
    assert response.status_code == 200
    return {obj.pk for obj in response.context["cl"].result_list}


def test_filters_by_status_agent_and_conversation(admin_client, queue):
    queued, dead, stuck = queue
    base = "/admin/workers/message/"
    assert ids_on(admin_client, base) == {queued.pk, dead.pk, stuck.pk}
    assert ids_on(admin_client, base + "?status__exact=queued") == {queued.pk}
    assert ids_on(admin_client, base + "?agent_key=beta") == {dead.pk}
    assert ids_on(admin_client, base + "?conversation=conv-c") == {stuck.pk}
    assert ids_on(admin_client, base + "?q=conv-a") == {queued.pk}


def test_dead_letter_and_expired_lease_views(admin_client, queue):
    queued, dead, stuck = queue
    assert ids_on(admin_client, "/admin/workers/deadletter/") == {dead.pk}
    assert ids_on(admin_client, "/admin/workers/expiredlease/") == {stuck.pk}


def test_requeue_asks_first_then_resets_attempts_and_audits(admin_client, queue):
    _, dead, _ = queue
    url = "/admin/workers/deadletter/"
    body = {"action": "requeue", "_selected_action": [dead.pk]}
    confirm = admin_client.post(url, body)
    assert confirm.status_code == 200 and b"Requeue these" in confirm.content
    dead.refresh_from_db()
    assert dead.status == "dead_letter"
    assert not AuditEvent.objects.filter(action="queue.requeue_dead_letters").exists()
    admin_client.post(url, {**body, "confirm": "yes"})
    dead.refresh_from_db()
    assert (dead.status, dead.attempts, dead.dead_lettered_at) == ("queued", 0, None)
    audit = AuditEvent.objects.get(action="queue.requeue_dead_letters")
    assert audit.details["message_ids"] == [dead.pk] and audit.actor


def test_requeue_ignores_rows_that_are_not_dead_letters(admin_client, queue):
    queued, _, stuck = queue
    admin_client.post(
        "/admin/workers/message/",
        {"action": "requeue", "_selected_action": [queued.pk, stuck.pk], "confirm": "yes"},
    )
    stuck.refresh_from_db()
    assert stuck.status == "processing"
    assert not AuditEvent.objects.filter(action="queue.requeue_dead_letters").exists()


def test_dashboard_numbers(queue, db):
    Worker.objects.create(worker_id="w-1", heartbeat_at=timezone.now())
    Worker.objects.create(worker_id="w-2", status="draining")
    data = dashboard_data()
    counts = {row["status"]: row["count"] for row in data["queue"]}
    assert counts == {"queued": 1, "processing": 1, "done": 0, "failed": 0, "dead_letter": 1}
    assert data["dead_letters"] == 1
    assert data["oldest_wait_seconds"] is not None and data["oldest_wait_seconds"] >= 0
    workers = {row["status"]: row["count"] for row in data["workers"]}
    assert workers["active"] == 1 and workers["draining"] == 1
    assert [e["last_error"] for e in data["recent_errors"]] == ["boom"]


def test_dashboard_renders_on_the_admin_index(admin_client, queue):
    content = admin_client.get("/admin/").content.decode()
    assert "queue-dashboard" in content and "boom" in content


def test_expired_lease_view_leaves_out_live_leases(admin_client, queue, enqueue):
    _, _, stuck = queue
    live = enqueue("conv-d", "alpha", "fourth")
    Message.objects.filter(pk=live.pk).update(
        status="processing",
        lease_id="l2",
        claimed_by="w-live",
        lease_expires_at=timezone.now() + dt.timedelta(minutes=5),
    )
    assert ids_on(admin_client, "/admin/workers/expiredlease/") == {stuck.pk}
    assert ids_on(admin_client, "/admin/workers/message/?status__exact=processing") == {
        stuck.pk,
        live.pk,
    }


def test_dead_letter_view_filters_by_agent(admin_client, queue, enqueue):
    _, dead, _ = queue
    other = enqueue("conv-e", "alpha", "fifth")
    Message.objects.filter(pk=other.pk).update(status="dead_letter", last_error="x")
    assert ids_on(admin_client, "/admin/workers/deadletter/") == {dead.pk, other.pk}
    assert ids_on(admin_client, "/admin/workers/deadletter/?agent_key=alpha") == {other.pk}


def test_snapshot_admin_lists_and_filters_and_cannot_add(admin_client, db):
    from workers.models import DataSnapshot

    ready = DataSnapshot.objects.create(
        agent_key="alpha", worker_id="w", conversation_id="c", reason="drain", status="ready"
    )
    DataSnapshot.objects.create(
        agent_key="alpha", worker_id="w", conversation_id="c", reason="drain", status="failed"
    )
    base = "/admin/workers/datasnapshot/"
    assert len(ids_on(admin_client, base)) == 2
    assert ids_on(admin_client, base + "?status__exact=ready") == {ready.pk}
    assert admin_client.get(base + "add/").status_code == 403
    assert admin_client.get(f"{base}{ready.pk}/change/").status_code == 200


def test_queue_admin_cannot_add_messages(admin_client, queue):
    assert admin_client.get("/admin/workers/message/add/").status_code == 403
