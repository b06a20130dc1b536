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
from agents.models import AuditEvent, Conversation, ConversationEntry
from telegram.conversation import SEND_AS_AGENT
from telegram.models import IdentityBinding
from tests.telegram.conftest import TG
from workers.models import JobUsage, Message, MessageAttachment, Worker

CID = "telegram:100:555"
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
    waiting_row = html.split(f'data-job="{waiting.pk}"')[1].split("</tr>")[0]
    assert "queued" in waiting_row and "<td>—</td>" in waiting_row
    # Links out: the jobs, the binding, the warm worker.
    assert reverse("admin:workers_message_change", args=[job.pk]) in html
    assert reverse("admin:telegram_identitybinding_change", args=[chat["binding"].pk]) in html
    assert reverse("admin:workers_worker_change", args=[chat["worker"].pk]) in html
    # An admin may send: the form is there.
    assert 'id="send-as-agent"' in html


def test_the_lists_link_to_the_page(admin_client, chat):
    for list_name in ("workers_message", "workers_worker", "telegram_identitybinding"):
        html = admin_client.get(reverse(f"admin:{list_name}_changelist")).content.decode()
        assert f'href="{page()}"' in html, list_name


def test_an_unknown_conversation_is_a_404(admin_client, chat):
    assert admin_client.get(page("nobody")).status_code == 404


def test_view_only_staff_sees_no_send_form(client, chat):
    staff(client, "agents.view_conversation")
    html = client.get(page()).content.decode()
    assert "hello human" in html and 'id="send-as-agent"' not in html


def test_send_as_agent_confirms_then_sends_and_appends(admin_client, chat, tg):
    sent = tg.post(
        f"{TG}/bot{TOKEN}/sendMessage",
        json={"ok": True, "result": {"message_id": 77, "chat": {"id": 555}}},
    )
    # First the confirmation page: nothing sent, nothing stored.
    response = admin_client.post(send_url(), {"text": "An operator here."})
    assert response.status_code == 200 and b'name="confirm" value="yes"' in response.content
    assert b"555" in response.content and sent.call_count == 0
    assert not ConversationEntry.objects.filter(content="An operator here.").exists()
    # Confirmed: Telegram gets it, the history has it as the agent's, the audit says who.
    response = admin_client.post(send_url(), {"text": "An operator here.", "confirm": "yes"})
    assert response.status_code == 302 and response["Location"] == page()
    assert sent.call_count == 1
    assert json.loads(sent.calls[0].request.body) == {"chat_id": "555", "text": "An operator here."}
    entry = ConversationEntry.objects.get(content="An operator here.")
    assert entry.role == "assistant" and entry.conversation == chat["conversation"]
    audit = AuditEvent.objects.get(action=SEND_AS_AGENT)
    assert audit.actor == "admin" and audit.target_id == str(chat["conversation"].pk)
    assert audit.details["ok"] is True and audit.details["telegram_message_ids"] == [77]
    assert audit.details["entry_id"] == entry.pk
    # And the page shows it.
    assert "An operator here." in admin_client.get(page()).content.decode()


def test_send_as_agent_is_refused_without_its_permission(client, chat, tg):
    staff(client, "agents.view_conversation", "agents.change_conversation")
    response = client.post(send_url(), {"text": "sneaky", "confirm": "yes"})
    assert response.status_code == 403
    assert len(tg.calls) == 0
    assert not ConversationEntry.objects.filter(content="sneaky").exists()
    denied = AuditEvent.objects.get(action=DENIED)
    assert denied.details["permission"] == "telegram.send_as_agent"
    assert not AuditEvent.objects.filter(action=SEND_AS_AGENT).exists()


def test_send_as_agent_allowed_with_exactly_its_permission(client, chat, tg):
    sent = tg.post(f"{TG}/bot{TOKEN}/sendMessage", json={"ok": True, "result": {"message_id": 1}})
    staff(client, "telegram.send_as_agent")
    response = client.post(send_url(), {"text": "allowed", "confirm": "yes"})
    assert response.status_code == 302 and sent.call_count == 1
    assert AuditEvent.objects.get(action=SEND_AS_AGENT).actor == "operator"


def test_a_get_on_send_changes_nothing(admin_client, chat, tg):
    assert admin_client.get(send_url()).status_code == 405
    assert len(tg.calls) == 0


def test_telegram_refusal_stores_nothing_but_the_audit(admin_client, chat, tg):
    tg.post(
        f"{TG}/bot{TOKEN}/sendMessage",
        json={"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked"},
        status=403,
    )
    response = admin_client.post(send_url(), {"text": "anyone?", "confirm": "yes"}, follow=True)
    assert "Telegram refused the message" in response.content.decode()
    assert not ConversationEntry.objects.filter(content="anyone?").exists()
    audit = AuditEvent.objects.get(action=SEND_AS_AGENT)
    assert audit.details["ok"] is False and "blocked" in audit.details["error"]


@pytest.mark.parametrize(
    "text, error", [("   ", "Write the text"), ("x" * 4097, "At most 4096 characters")]
)
def test_bad_text_is_refused_and_sends_nothing(admin_client, chat, tg, text, error):
    response = admin_client.post(send_url(), {"text": text, "confirm": "yes"}, follow=True)
    assert error in response.content.decode()
    assert len(tg.calls) == 0 and not AuditEvent.objects.filter(action=SEND_AS_AGENT).exists()


def test_no_chat_known_is_said_plainly(admin_client, chat, tg):
    Message.objects.update(payload={})
    IdentityBinding.objects.update(telegram_chat_id="")
    response = admin_client.post(send_url(), {"text": "hi", "confirm": "yes"}, follow=True)
    assert "No Telegram chat is known" in response.content.decode()
    assert len(tg.calls) == 0


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
