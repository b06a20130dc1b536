"""The conversation page (issue 14, SPEC §16): the history as a chat with each job's status,
attempts, latency and usage; links from the lists; "send as the agent" through a faked
Telegram, permission-checked, confirmed and audited; a constant number of queries."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from agents.admin_access import DENIED
from agents.external_errors import ExternalApiError
from agents.models import AgentProfile, AuditEvent, Conversation, ConversationEntry
from telegram.conversation import SEND_AS_AGENT
from telegram.models import IdentityBinding
from telegram.outbox_models import OutboxBot, OutboxMessage
from tests.telegram.conftest import TG
from workers.models import JobUsage, Message, MessageAttachment, Worker

CID = "telegram:100:555"
OPERATOR = OutboxMessage.objects.filter(kind="operator")
TOKEN = "100:TOKEN-alpha"


def page(conversation_id: str = CID) -> str:
    return reverse("admin:telegram_conversation", args=[conversation_id])


def send_url(conversation_id: str = CID) -> str:
    return reverse("admin:telegram_conversation_send", args=[conversation_id])


@pytest.fixture
def chat(make_bot):
    """A bound conversation with one answered job: a photo, two entries, usage, a worker."""
    bot = make_bot("alpha", "100")
    conversation = Conversation.objects.create(conversation_id=CID, agent=bot.agent)
    t0 = timezone.now() - dt.timedelta(minutes=5)
    job = Message.objects.create(
        conversation=conversation,
        agent_key="alpha",
        payload={"message_text": "hello bot", "metadata": {"telegram_chat_id": "555"}},
        status=Message.DONE,
        attempts=2,
        created_at=t0,
        claimed_at=t0 + dt.timedelta(seconds=1.5),
        completed_at=t0 + dt.timedelta(seconds=4),
        delivered_at=t0 + dt.timedelta(seconds=4.25),
    )
    MessageAttachment.objects.create(message=job, kind="photo", file_name="cat.jpg")
    # Its reply went out as two Telegram messages; the last accepted at 4.25 s.
    for part, (sent_s, tg_id) in enumerate([(4.1, 900), (4.25, 901)]):
        OutboxMessage.objects.create(
            agent_key="alpha",
            chat_id="555",
            job=job,
            part=part,
            parts=2,
            text=f"part {part}",
            status="sent",
            attempts=1 + part,
            sent_at=t0 + dt.timedelta(seconds=sent_s),
            telegram_message_id=tg_id,
        )
    ConversationEntry.objects.create(
        conversation=conversation, role="user", content="hello bot", at=t0, source_message_id=job.pk
    )
    ConversationEntry.objects.create(
        conversation=conversation,
        role="assistant",
        content="hello human",
        at=t0 + dt.timedelta(seconds=4),
        source_message_id=job.pk,
    )
    JobUsage.objects.create(
        message=job,
        agent_key="alpha",
        consumer_user="u1",
        model="demo/model",
        input_tokens=120,
        output_tokens=30,
        cost_usd="0.004500",
        outcome="done",
    )
    waiting = Message.objects.create(
        conversation=conversation,
        agent_key="alpha",
        payload={"message_text": "are you there?", "metadata": {"telegram_chat_id": "555"}},
    )
    binding = IdentityBinding.objects.create(
        consumer_user_id="u1",
        agent=bot.agent,
        conversation_id=CID,
        bot_identity="100",
        telegram_chat_id="555",
    )
    worker = Worker.objects.create(worker_id="w-warm", provider="local")
    Worker.objects.filter(pk=worker.pk).update(assigned_conversation=conversation)
    return {
        "conversation": conversation,
        "job": job,
        "waiting": waiting,
        "binding": binding,
        "worker": worker,
    }


def staff(client, *perms):
    user = get_user_model().objects.create_user("operator", password="pw", is_staff=True)
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app, codename=codename)
        )
    client.force_login(user)
    return client


def test_page_reads_like_a_chat_with_each_job(admin_client, chat):
    response = admin_client.get(page())
    assert response.status_code == 200
    html = response.content.decode()
    # The turns in order, with their roles and times; the queued message as a pending turn.
    turns = [t for t in response.context["turns"]]
    assert [(t.role, t.text, t.pending) for t in turns] == [
        ("user", "hello bot", False),
        ("assistant", "hello human", False),
        ("user", "are you there?", True),
    ]
    assert 'data-role="assistant"' in html and "hello human" in html
    assert "attachment: photo cat.jpg" in html
    # The answered job: status, attempts, latency legs (enqueue → claim → complete →
    # delivered), usage; the waiting one with no legs yet.
    job, waiting = chat["job"], chat["waiting"]
    row = html.split(f'data-job="{job.pk}"')[1].split("</tr>")[0]
    for figure in ("done", "2/5", "<td>1.5</td>", "<td>2.5</td>", "<td>0.25</td>", "<td>4.25</td>"):
        assert figure in row, figure
    assert "120/30" in row and "demo/model" in row and "0.0045" in row
    # Its outbox rows: part, status, attempts, sent time, Telegram's message id.
    first, second = OutboxMessage.objects.filter(job=job).order_by("part")
    for outbox_row, figures in (
        (first, ("reply 1/2 sent ×1", "tg 900")),
        (second, ("reply 2/2 sent ×2", "tg 901")),
    ):
        cell = row.split(f'data-outbox="{outbox_row.pk}"')[1].split("</div>")[0]
        assert all(f in cell for f in figures), (cell, figures)
        assert f"{outbox_row.sent_at:%H:%M:%S}" in cell
    waiting_row = html.split(f'data-job="{waiting.pk}"')[1].split("</tr>")[0]
    assert "queued" in waiting_row and "<td>—</td>" in waiting_row
    # Links out: the jobs, the binding, the warm worker.
    assert reverse("admin:workers_message_change", args=[job.pk]) in html
    assert reverse("admin:telegram_identitybinding_change", args=[chat["binding"].pk]) in html
    assert reverse("admin:workers_worker_change", args=[chat["worker"].pk]) in html
    # An admin may send: the form is there.
    assert 'id="send-as-agent"' in html


def test_the_lists_link_to_the_page(admin_client, chat):
    lists = (
        "workers_message",
        "workers_worker",
        "telegram_identitybinding",
        "telegram_outboxmessage",
    )
    for list_name in lists:
        html = admin_client.get(reverse(f"admin:{list_name}_changelist")).content.decode()
        assert f'href="{page()}"' in html, list_name


def test_an_unknown_conversation_is_a_404(admin_client, chat):
    assert admin_client.get(page("nobody")).status_code == 404


def test_view_only_staff_sees_no_send_form(client, chat):
    staff(client, "agents.view_conversation")
    html = client.get(page()).content.decode()
    assert "hello human" in html and 'id="send-as-agent"' not in html


def confirm(client, text: str, capture, **extra):
    """POST the confirmed form and run what it starts after commit (the outbox sender, a
    synchronous django-q2 task in tests)."""
    with capture(execute=True):
        return client.post(send_url(), {"text": text, "confirm": "yes"}, **extra)


def test_send_as_agent_confirms_then_goes_through_the_outbox(
    admin_client, chat, tg, django_capture_on_commit_callbacks
):
    sent = tg.post(
        f"{TG}/bot{TOKEN}/sendMessage",
        json={"ok": True, "result": {"message_id": 77, "chat": {"id": 555}}},
    )
    # First the confirmation page: nothing sent, nothing stored.
    response = admin_client.post(send_url(), {"text": "An operator here."})
    assert response.status_code == 200 and b'name="confirm" value="yes"' in response.content
    assert b"555" in response.content and sent.call_count == 0
    assert not ConversationEntry.objects.filter(content="An operator here.").exists()
    assert not OPERATOR.exists()
    # Confirmed: an outbox row, which the sender delivers; the history has it as the
    # agent's; the audit says who, and which rows.
    response = confirm(admin_client, "An operator here.", django_capture_on_commit_callbacks)
    assert response.status_code == 302 and response["Location"] == page()
    row = OPERATOR.get()
    assert (row.kind, row.chat_id, row.agent_key, row.job) == ("operator", "555", "alpha", None)
    assert row.conversation == chat["conversation"]
    assert (row.status, row.attempts, row.telegram_message_id) == ("sent", 1, 77)
    assert sent.call_count == 1
    assert json.loads(sent.calls[0].request.body) == {"chat_id": "555", "text": "An operator here."}
    entry = ConversationEntry.objects.get(content="An operator here.")
    assert entry.role == "assistant" and entry.conversation == chat["conversation"]
    audit = AuditEvent.objects.get(action=SEND_AS_AGENT)
    assert audit.actor == "admin" and audit.target_id == str(chat["conversation"].pk)
    assert audit.details["outbox_ids"] == [row.pk] and audit.details["entry_id"] == entry.pk
    # The page shows it as an outbox row: status, attempts, sender, Telegram's id.
    html = admin_client.get(page()).content.decode()
    assert "An operator here." in html
    line = html.split('id="operator-messages"')[1].split(f'data-outbox="{row.pk}"')[1]
    line = line.split("</tr>")[0]
    for figure in ("sent", "<td>1</td>", "<td>admin</td>", "<td>77</td>"):
        assert figure in line, figure


def test_send_as_agent_waits_out_a_429_like_any_reply(
    admin_client, chat, tg, django_capture_on_commit_callbacks
):
    tg.post(
        f"{TG}/bot{TOKEN}/sendMessage",
        json={
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 7",
            "parameters": {"retry_after": 7},
        },
        status=429,
    )
    confirm(admin_client, "later", django_capture_on_commit_callbacks)
    row = OPERATOR.get()
    assert row.status == "pending" and row.attempts == 0 and "429" in row.last_error
    assert row.next_attempt_at > timezone.now() + dt.timedelta(seconds=5)
    assert OutboxBot.objects.get(agent_key="alpha").paused_until is not None
    # Recorded for the dashboard as a Telegram API error of that bot.
    error = ExternalApiError.objects.get()
    assert (error.service, error.operation, error.subject, error.status_code) == (
        "telegram",
        "sendMessage",
        "alpha",
        429,
    )


def test_send_as_agent_is_refused_without_its_permission(
    client, chat, tg, django_capture_on_commit_callbacks
):
    staff(client, "agents.view_conversation", "agents.change_conversation")
    response = confirm(client, "sneaky", django_capture_on_commit_callbacks)
    assert response.status_code == 403
    assert len(tg.calls) == 0 and not OPERATOR.exists()
    assert not ConversationEntry.objects.filter(content="sneaky").exists()
    denied = AuditEvent.objects.get(action=DENIED)
    assert denied.details["permission"] == "telegram.send_as_agent"
    assert not AuditEvent.objects.filter(action=SEND_AS_AGENT).exists()


def test_send_as_agent_allowed_with_exactly_its_permission(
    client, chat, tg, django_capture_on_commit_callbacks
):
    sent = tg.post(f"{TG}/bot{TOKEN}/sendMessage", json={"ok": True, "result": {"message_id": 1}})
    staff(client, "telegram.send_as_agent")
    response = confirm(client, "allowed", django_capture_on_commit_callbacks)
    assert response.status_code == 302 and sent.call_count == 1
    assert OPERATOR.get().status == "sent"
    assert AuditEvent.objects.get(action=SEND_AS_AGENT).actor == "operator"


def test_a_get_on_send_changes_nothing(admin_client, chat, tg):
    assert admin_client.get(send_url()).status_code == 405
    assert len(tg.calls) == 0 and not OPERATOR.exists()


def test_a_telegram_refusal_marks_the_row_failed_with_its_reason(
    admin_client, chat, tg, django_capture_on_commit_callbacks
):
    tg.post(
        f"{TG}/bot{TOKEN}/sendMessage",
        json={"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked"},
        status=403,
    )
    confirm(admin_client, "anyone?", django_capture_on_commit_callbacks)
    row = OPERATOR.get()
    assert row.status == "failed" and "blocked" in row.last_error
    html = admin_client.get(page()).content.decode()
    assert "Forbidden: bot was blocked" in html.split('id="operator-messages"')[1]
    # The recipient's refusal is the row's, not a Telegram API error.
    assert not ExternalApiError.objects.exists()


@pytest.mark.parametrize(
    "text, error", [("   ", "Write the text"), ("x" * 4097, "At most 4096 characters")]
)
def test_bad_text_is_refused_and_sends_nothing(admin_client, chat, tg, text, error):
    response = admin_client.post(send_url(), {"text": text, "confirm": "yes"}, follow=True)
    assert error in response.content.decode()
    assert len(tg.calls) == 0 and not AuditEvent.objects.filter(action=SEND_AS_AGENT).exists()
    assert not OPERATOR.exists() and not ConversationEntry.objects.filter(content=text).exists()


def test_no_chat_known_is_said_plainly(admin_client, chat, tg):
    Message.objects.update(payload={})
    IdentityBinding.objects.update(telegram_chat_id="")
    response = admin_client.post(send_url(), {"text": "hi", "confirm": "yes"}, follow=True)
    assert "No Telegram chat is known" in response.content.decode()
    assert len(tg.calls) == 0 and not OPERATOR.exists()


def grow(conversation, rows: int) -> None:
    """``rows`` more history entries and jobs (each job with an attachment and usage)."""
    now = timezone.now()
    ConversationEntry.objects.bulk_create(
        ConversationEntry(conversation=conversation, role="user", content=f"e{i}", at=now)
        for i in range(rows)
    )
    jobs = Message.objects.bulk_create(
        Message(conversation=conversation, agent_key="alpha", payload={"message_text": f"m{i}"})
        for i in range(rows)
    )
    if connection.vendor == "sqlite":  # bulk_create sets no pks there on older versions
        jobs = list(Message.objects.filter(conversation=conversation).order_by("-id")[:rows])
    MessageAttachment.objects.bulk_create(MessageAttachment(message=j, kind="photo") for j in jobs)
    JobUsage.objects.bulk_create(
        JobUsage(message=j, agent_key="alpha", consumer_user="u1", outcome="done") for j in jobs
    )
    OutboxMessage.objects.bulk_create(
        OutboxMessage(agent_key="alpha", chat_id="555", job=j, text="r", status="sent", sent_at=now)
        for j in jobs
    )
    OutboxMessage.objects.bulk_create(
        OutboxMessage(
            agent_key="alpha",
            chat_id="555",
            kind="operator",
            conversation=conversation,
            text=f"op {i}",
            status="failed",
            last_error="403: blocked",
        )
        for i in range(rows)
    )
    AuditEvent.objects.bulk_create(
        AuditEvent(
            actor="admin",
            action=SEND_AS_AGENT,
            target_type="agents.conversation",
            target_id=str(conversation.pk),
            details={"outbox_ids": [i]},
        )
        for i in range(rows)
    )


def test_page_queries_do_not_grow_with_rows(admin_client, chat, django_assert_num_queries):
    conversation = chat["conversation"]
    admin_client.get(page())  # warm the per-process caches
    with CaptureQueriesContext(connection) as small:
        assert admin_client.get(page()).status_code == 200
    grow(conversation, 1000)
    with django_assert_num_queries(len(small)):
        response = admin_client.get(page())
    assert response.context["entry_count"] == 1002 and response.context["job_count"] == 1002
    assert len(response.context["jobs"]) == 50
    assert len(response.context["operator_messages"]) == 50
    assert all(job.outbox for job in response.context["jobs"])


def legs(admin_client, job) -> dict:
    html = admin_client.get(page()).content.decode()
    row = html.split(f'data-job="{job.pk}"')[1].split("</tr>")[0]
    cells = row.split("<td>")[5:9]  # wait, work, delivery, total
    values = [c.split("</td>")[0] for c in cells]
    return dict(zip(("wait", "work", "delivery", "total"), values, strict=True))


def test_legs_when_the_server_delivers_come_from_the_outbox(admin_client, chat):
    job = chat["job"]
    # The outbox rows decide: the message's own mark is not what the user saw.
    Message.objects.filter(pk=job.pk).update(delivered_at=None)
    assert legs(admin_client, job) == {
        "wait": "1.5",
        "work": "2.5",
        "delivery": "0.25",
        "total": "4.25",
    }
    # A part still waiting: not delivered yet, the total runs to the completion.
    OutboxMessage.objects.filter(job=job, part=1).update(status="pending", sent_at=None)
    assert legs(admin_client, job) == {
        "wait": "1.5",
        "work": "2.5",
        "delivery": "—",
        "total": "4.0",
    }


def test_legs_when_the_worker_delivers_are_never_negative(admin_client, chat):
    """``delivery: worker``: the worker sends, reports ``delivered``, then completes, so
    its delivered time comes before the completion (a naive complete → delivered leg is
    negative)."""
    AgentProfile.objects.filter(agent_key="alpha").update(delivery="worker")
    job = chat["job"]
    OutboxMessage.objects.filter(job=job).delete()
    t0 = job.created_at
    Message.objects.filter(pk=job.pk).update(
        claimed_at=t0 + dt.timedelta(seconds=1),
        delivered_at=t0 + dt.timedelta(seconds=3),
        completed_at=t0 + dt.timedelta(seconds=3.5),
    )
    got = legs(admin_client, job)
    assert (got["wait"], got["work"], got["total"]) == ("1.0", "2.0", "3.0")
    assert "by worker" in got["delivery"]
    # Not delivered (yet): no work leg to the delivery, nothing negative anywhere.
    Message.objects.filter(pk=job.pk).update(delivered_at=None)
    got = legs(admin_client, job)
    assert (got["wait"], got["work"], got["delivery"], got["total"]) == ("1.0", "2.5", "—", "3.5")
