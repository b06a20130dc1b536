"""/metrics: who may read it, the series SPEC §24 lists, read from the tables at scrape time."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from agents.external_errors import record_api_error
from agents.models import AgentProfile
from telegram.models import Bot, IngressIssue
from workers.models import Message, Worker

TOKEN = "metrics-token-for-tests"


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client, **headers) -> dict:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            key = sample.name + "".join(f"|{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[key] = sample.value
    return samples


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["none", "wrong-token", "wrong-scheme"],
)
def test_refused_without_staff_or_token(client, db, metrics_token, headers):
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response["WWW-Authenticate"] == "Bearer"


def test_no_token_configured_means_no_token_works(client, db, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401


def test_a_worker_token_is_not_a_metrics_token(client, db, metrics_token, make_worker):
    _, worker_token = make_worker()
    response = client.get("/metrics", headers={"Authorization": f"Bearer {worker_token}"})
    assert response.status_code == 401


def test_a_non_staff_session_is_refused(client, db):
    user = get_user_model().objects.create_user("member", password="pw")
    client.force_login(user)
    assert client.get("/metrics").status_code == 401


def test_staff_session_and_token_both_work(client, db, metrics_token):
    assert "agent_factory_queue_messages|status=queued" in scrape(
        client, Authorization=f"Bearer {TOKEN}"
    )
    staff = get_user_model().objects.create_user("ops", password="pw", is_staff=True)
    client.force_login(staff)
    assert "agent_factory_queue_messages|status=queued" in scrape(client)


def fill(enqueue, n: int):
    """n conversations, each with a queued, a done (delivered), a failed-then-done and a dead
    message; workers on two providers; an ingress issue; a bot with a webhook error."""
    agent = AgentProfile.objects.get_or_create(agent_key="alpha")[0]
    now = timezone.now()
    for i in range(n):
        enqueue(f"c{i}", "alpha")
        done = enqueue(f"c{i}", "alpha")
        Message.objects.filter(pk=done.pk).update(
            status="done",
            attempts=1,
            claimed_at=now,
            completed_at=now,
            created_at=now - dt.timedelta(seconds=3),
            delivered_at=now,
        )
        retried = enqueue(f"c{i}", "alpha")
        Message.objects.filter(pk=retried.pk).update(
            status="done",
            attempts=2,
            completed_at=now,
            created_at=now - dt.timedelta(seconds=45),
            delivered_at=now,
        )
        dead = enqueue(f"c{i}", "alpha")
        Message.objects.filter(pk=dead.pk).update(status="dead_letter", attempts=5)
        Worker.objects.create(worker_id=f"l{i}", provider="local", status="active")
        Worker.objects.create(
            worker_id=f"f{i}", provider="fly", status="stopped", last_error="spawn: 500"
        )
        IngressIssue.objects.create(bot_identity="1", kind="unroutable", detail="x")
        record_api_error("telegram", "sendMessage", "502", subject="alpha", status_code=502)
    for _ in range(3):  # one burst of Fly errors: one row, counted three times
        record_api_error("fly", "POST /apps/{app}/machines", "500", subject="a", status_code=500)
    Bot.objects.get_or_create(
        agent=agent, bot_identity="1", defaults={"last_error_message": "Wrong response"}
    )


def test_series_follow_the_tables(client, db, metrics_token, enqueue):
    fill(enqueue, 2)
    old = Message.objects.filter(status="queued").order_by("pk").first()
    Message.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(minutes=7))
    s = scrape(client, Authorization=f"Bearer {TOKEN}")
    assert s["agent_factory_queue_messages|status=queued"] == 2
    assert s["agent_factory_queue_messages|status=done"] == 4
    assert s["agent_factory_queue_messages|status=dead_letter"] == 2
    assert s["agent_factory_queue_messages|status=processing"] == 0
    assert 7 * 60 <= s["agent_factory_queue_oldest_waiting_seconds"] < 7 * 60 + 30
    assert s["agent_factory_claims_total"] == 2 * (1 + 2 + 5)
    assert s["agent_factory_completes_total"] == 4
    assert s["agent_factory_failures_total"] == 2 * (1 + 5)
    # Latencies: 3 s and 45 s, twice.
    assert s["agent_factory_reply_latency_seconds_bucket|le=2.0"] == 0
    assert s["agent_factory_reply_latency_seconds_bucket|le=5.0"] == 2
    assert s["agent_factory_reply_latency_seconds_bucket|le=30.0"] == 2
    assert s["agent_factory_reply_latency_seconds_bucket|le=60.0"] == 4
    assert s["agent_factory_reply_latency_seconds_bucket|le=+Inf"] == 4
    assert s["agent_factory_reply_latency_seconds_count"] == 4
    assert s["agent_factory_reply_latency_seconds_sum"] == pytest.approx(96, abs=0.1)
    assert s["agent_factory_workers|provider=local|status=active"] == 2
    assert s["agent_factory_workers|provider=fly|status=stopped"] == 2
    assert s["agent_factory_workers_with_error|provider=fly"] == 2
    assert s["agent_factory_workers_with_error|provider=local"] == 0
    assert s["agent_factory_ingress_issues_total|kind=unroutable"] == 2
    assert s["agent_factory_telegram_bots_with_webhook_error"] == 1
    assert s["agent_factory_fly_cleanup_failures_total"] == 0
    assert s["agent_factory_external_api_errors_total|service=fly"] == 3
    assert s["agent_factory_external_api_errors_total|service=telegram"] == 2


def test_an_empty_system_scrapes_zeros(client, db, metrics_token):
    s = scrape(client, Authorization=f"Bearer {TOKEN}")
    assert s["agent_factory_queue_oldest_waiting_seconds"] == 0
    assert s["agent_factory_reply_latency_seconds_count"] == 0
    assert s["agent_factory_claims_total"] == 0


@pytest.mark.parametrize("n", [1, 50])
def test_a_scrape_costs_constant_queries(
    client, db, metrics_token, enqueue, n, django_assert_num_queries
):
    fill(enqueue, n)
    with django_assert_num_queries(8):
        client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})


def test_outbox_rows_and_stuck_retries_are_scraped(client, db, metrics_token):
    from telegram.outbox_models import OutboxMessage

    OutboxMessage.objects.create(agent_key="a", chat_id="1", text="x", status="failed")
    OutboxMessage.objects.create(
        agent_key="a", chat_id="2", text="y", status="sent", stuck_retries=2
    )
    s = scrape(client, Authorization=f"Bearer {TOKEN}")
    assert s["agent_factory_outbox_messages|status=failed"] == 1
    assert s["agent_factory_outbox_messages|status=pending"] == 0
    assert s["agent_factory_outbox_stuck_retries_total"] == 2
