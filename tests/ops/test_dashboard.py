"""The admin index dashboard (issue 14, SPEC §16): its figures against known data (the 24 h
window pinned with time-machine), well-formed server-drawn SVG, the channels' recent errors,
and a constant number of queries with 1 row or 1,000."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.external_errors import ExternalApiError, record_api_error
from agents.models import AgentProfile, Conversation
from ops import svg
from telegram.models import Bot, IngressIssue
from telegram.outbox_models import OutboxMessage
from workers.dashboard import dashboard_data, percentile
from workers.models import Message, Worker
from workers.reconcile import SPAWN_FAILED

NOW = dt.datetime(2026, 3, 10, 12, 30, tzinfo=dt.UTC)


@pytest.fixture
def conversation(db):
    agent = AgentProfile.objects.create(agent_key="alpha")
    return Conversation.objects.create(conversation_id="c-dash", agent=agent)


def done(conversation, created, latency_s: float, *, delivered=True) -> Message:
    end = created + dt.timedelta(seconds=latency_s)
    return Message.objects.create(
        conversation=conversation,
        agent_key="alpha",
        payload={},
        status=Message.DONE,
        created_at=created,
        claimed_at=created,
        completed_at=end,
        delivered_at=end if delivered else None,
    )


@pytest.fixture
def known(conversation):
    """Ten replies in the window (5 × 0.1 s, 4 × 1.5 s, 1 × 20 s), one 25 h old, a queue."""
    in_hour = NOW.replace(minute=5)
    for _ in range(5):
        done(conversation, in_hour, 0.1)
    for _ in range(4):
        done(conversation, in_hour - dt.timedelta(hours=2), 1.5, delivered=False)
    done(conversation, in_hour - dt.timedelta(hours=2), 20)
    done(conversation, NOW - dt.timedelta(hours=25), 500)  # outside the 24 h window
    for minutes in (3, 7):
        Message.objects.create(
            conversation=conversation,
            agent_key="alpha",
            payload={},
            created_at=NOW - dt.timedelta(minutes=minutes),
            scheduled_for=NOW - dt.timedelta(minutes=minutes),
        )
    Message.objects.create(
        conversation=conversation,
        agent_key="alpha",
        payload={},
        status=Message.DEAD_LETTER,
        last_error="handler crashed",
        created_at=NOW,
    )
    Worker.objects.create(worker_id="l1", provider="local", status="active")
    Worker.objects.create(worker_id="f1", provider="fly", status="active")
    Worker.objects.create(worker_id="f2", provider="fly", status="draining")
    Worker.objects.create(
        worker_id="f3",
        provider="fly",
        status="stopped",
        status_reason=SPAWN_FAILED,
        last_error="Fly API 422: no capacity in iad",
    )


def test_percentile_interpolates_within_its_bucket():
    # Buckets ≤0.25, ≤0.5, ≤1, ≤2 …: 4 rows in the first, 4 in the fourth.
    counts = [4, 0, 0, 4, 0, 0, 0, 0, 0, 0]
    assert percentile(counts, 8, 0.5) == 0.25
    assert percentile(counts, 8, 0.75) == 1.5
    assert percentile(counts, 0, 0.5) is None
    assert percentile([0] * 10, 3, 0.5) == 3600.0  # all beyond the last bound: "at least"


def test_dashboard_figures_against_known_data(known):
    with time_machine.travel(NOW, tick=False):
        data = dashboard_data()
    counts = {row["status"]: row["count"] for row in data["queue"]}
    assert counts == {"queued": 2, "processing": 0, "done": 11, "failed": 0, "dead_letter": 1}
    assert data["oldest_wait_seconds"] == 7 * 60
    assert data["dead_letters"] == 1
    assert data["replies_24h"] == 10
    # p50: rank 5 of 10, the fifth of five in (0, 0.25]; p95: rank 9.5, halfway into the
    # one reply in (10, 30] (1.5 s replies count to their completion: not delivered here).
    assert data["latency_p50"] == 0.25
    assert data["latency_p95"] == 20.0
    assert dict(data["latency_buckets"])[2] == 4
    rates = dict(data["replies_per_minute"])
    assert len(rates) == 24
    assert rates[NOW.replace(minute=0)] == round(5 / 60, 2)
    assert rates[NOW.replace(minute=0) - dt.timedelta(hours=2)] == round(5 / 60, 2)
    assert sum(1 for rate in rates.values() if rate) == 2
    assert {(w["provider"], w["status"]): w["count"] for w in data["workers_by_provider"]} == {
        ("local", "active"): 1,
        ("fly", "active"): 1,
        ("fly", "draining"): 1,
        ("fly", "stopped"): 1,
    }
    assert {w["status"]: w["count"] for w in data["workers"]}["active"] == 2
    assert [w["last_error"] for w in data["failed_spawns"]] == ["Fly API 422: no capacity in iad"]
    assert [e["last_error"] for e in data["recent_errors"]] == ["handler crashed"]


def test_the_window_moves_with_the_clock(known):
    with time_machine.travel(NOW + dt.timedelta(hours=23), tick=False):
        assert dashboard_data()["replies_24h"] == 5  # the 10:05 replies are over 24 h old


def svgs(html: str) -> list[ET.Element]:
    # Ours only (the admin's own theme icons are SVG too).
    return [
        ET.fromstring(m) for m in re.findall(r'<svg [^>]*class="af-chart".*?</svg>', html, re.S)
    ]


def test_index_draws_charts_and_lists_the_channels_errors(admin_client, known):
    agent = AgentProfile.objects.get()
    Bot.objects.create(
        agent=agent,
        bot_identity="100",
        last_error_message="setWebhook: 401 Unauthorized",
        last_error_at=timezone.now(),
    )
    IngressIssue.objects.create(bot_identity="100", kind="unbound", detail="user 9 not paired")
    record_api_error(
        "fly", "POST /apps/{app}/machines", "(503) upstream down", subject="af-w", status_code=503
    )
    record_api_error(
        "telegram",
        "sendMessage",
        "Telegram sendMessage failed (502)",
        subject="alpha",
        status_code=502,
    )
    record_api_error(
        "telegram",
        "sendMessage",
        "Telegram sendMessage failed (502)",
        subject="alpha",
        status_code=502,
    )
    job = Message.objects.exclude(last_error="").get()
    failed = OutboxMessage.objects.create(
        agent_key="alpha",
        chat_id="555",
        job=job,
        text="hi",
        status="failed",
        attempts=1,
        last_error="403: Forbidden: bot was blocked by the user",
    )
    OutboxMessage.objects.create(agent_key="alpha", chat_id="556", text="ok", status="sent")
    with time_machine.travel(NOW, tick=False):
        html = admin_client.get("/admin/").content.decode()
    charts = svgs(html)
    assert len(charts) == 3  # queue by status, replies per minute, latency distribution
    titles = [c.find("{http://www.w3.org/2000/svg}title").text for c in charts]
    assert titles[1] == "Replies per minute, hourly, last 24 h"
    assert len(charts[1].findall("{http://www.w3.org/2000/svg}rect")) == 24
    for text in (
        "handler crashed",
        "Fly API 422: no capacity in iad",
        "user 9 not paired",
        "setWebhook: 401 Unauthorized",
        'id="latency-p95">20.0 s',
        # External API errors (a burst counted) and failed outbox rows with their reason.
        "Fly Machines API POST /apps/{app}/machines for af-w (503)",
        "(503) upstream down",
        "Telegram Bot API sendMessage for alpha (502) ×2",
        "403: Forbidden: bot was blocked by the user",
        f'href="/admin/telegram/outboxmessage/{failed.pk}/change/"',
    ):
        assert text in html, text
    errors = html.split('id="recent-errors"')[1].split("</ul>")[0]
    assert (
        errors.count('class="af-failed-outbox"') == 1 and errors.count('class="af-api-error"') == 2
    )
    assert 'href="/admin/telegram/identitybinding/conversation/c-dash/"' in html


def test_svg_escapes_what_it_is_given():
    drawn = svg.bars([('<script>alert("x")</script>', 3), ("b & c", 0)], title="a < b")
    root = ET.fromstring(str(drawn))
    assert root.find("{http://www.w3.org/2000/svg}rect/{http://www.w3.org/2000/svg}title").text == (
        '<script>alert("x")</script>: 3'
    )
    assert "<script>" not in str(drawn)
    labelled = ET.fromstring(str(svg.bars([("a<b", 1), ("c", 2)], label_every=1)))
    assert [t.text for t in labelled.iter("{http://www.w3.org/2000/svg}text")] == ["a<b", "c"]
    ET.fromstring(str(svg.sparkline([0, 2, 1], title="x")))
    ET.fromstring(str(svg.sparkline([], title="empty")))


def many(conversation, n: int, prefix: str) -> None:
    now = timezone.now()
    Message.objects.bulk_create(
        Message(
            conversation=conversation,
            agent_key="alpha",
            payload={},
            status=status,
            created_at=now - dt.timedelta(minutes=i % 1400),
            completed_at=now,
            last_error="e" if status == Message.DEAD_LETTER else "",
        )
        for i, status in zip(
            range(n), [Message.DONE, Message.QUEUED, Message.DEAD_LETTER] * n, strict=False
        )
    )
    Worker.objects.bulk_create(
        Worker(worker_id=f"{prefix}-{i}", provider="local") for i in range(n)
    )
    jobs = list(Message.objects.filter(conversation=conversation).order_by("-id")[:n])
    OutboxMessage.objects.bulk_create(
        OutboxMessage(
            agent_key="alpha",
            chat_id=str(i),
            job=jobs[i] if i % 2 else None,
            text="x",
            status="failed" if i % 3 else "sent",
            last_error="403: blocked",
        )
        for i in range(n)
    )
    ExternalApiError.objects.bulk_create(
        ExternalApiError(service="fly", operation=f"GET /x{i}", detail="500", status_code=500)
        for i in range(n)
    )


def test_index_queries_do_not_grow_with_rows(admin_client, conversation, django_assert_num_queries):
    many(conversation, 1, "one")
    admin_client.get("/admin/")  # warm the per-process caches
    with CaptureQueriesContext(connection) as one:
        assert admin_client.get("/admin/").status_code == 200
    many(conversation, 1000, "more")
    with django_assert_num_queries(len(one)):
        html = admin_client.get("/admin/").content.decode()
    assert len(svgs(html)) == 3
