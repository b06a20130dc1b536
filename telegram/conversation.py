"""One conversation as an operator reads it (history as a chat, each job's status, attempts,
latency and usage) and "send as the agent": a text to the conversation's Telegram chat,
appended to its history as an assistant entry and audited.

The page reads agents, workers and telegram rows, so it lives here, the top of those three.
Its cost is a fixed number of queries: the history and the jobs are read in bounded windows
(the newest ``HISTORY_LIMIT`` entries, ``JOB_LIMIT`` jobs) with their attachments and usage
in one query each."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from agents.audit import record_audit
from agents.models import AgentProfile, AuditEvent, Conversation, ConversationEntry
from agents.secret_store import SecretUnavailable
from telegram.bots import agent_client
from telegram.models import IdentityBinding
from telegram.outbox import write_rows
from telegram.outbox_models import OutboxMessage
from workers.models import JobUsage, Message, MessageAttachment, Worker

HISTORY_LIMIT = 200
JOB_LIMIT = 50
# One Telegram message: an operator's note is short, and a split reply would be several.
MAX_TEXT = 4096
SEND_AS_AGENT = "conversation.send_as_agent"


class SendError(Exception):
    """Why "send as the agent" did nothing (shown to the operator as is)."""


@dataclass
class Job:
    message: Message
    attachments: list = field(default_factory=list)
    usage: list = field(default_factory=list)
    outbox: list = field(default_factory=list)  # its OutboxMessage rows, in order
    worker_delivery: bool = False  # the agent's worker sends its replies itself

    @staticmethod
    def _span(start, end) -> float | None:
        # Never negative: legs are measured between events in the order they happened.
        return round(max(0.0, (end - start).total_seconds()), 3) if start and end else None

    @property
    def reply_rows(self) -> list:
        return [row for row in self.outbox if row.kind == OutboxMessage.REPLY]

    @property
    def sent_by_worker(self) -> bool:
        """The reply went out from the worker (``delivery: worker``): it reported the time
        Telegram accepted it (``delivered``) before completing, and there is no outbox row."""
        m = self.message
        if m.delivered_at is None or self.reply_rows:
            return False
        return self.worker_delivery or (
            m.completed_at is not None and m.delivered_at <= m.completed_at
        )

    @property
    def delivered_at(self):
        """When the user had the reply: the last reply row's sent time (server delivery),
        else the time the worker reported (worker delivery)."""
        rows = self.reply_rows
        if rows:
            if all(row.status == OutboxMessage.SENT and row.sent_at for row in rows):
                return max(row.sent_at for row in rows)
            return None
        return self.message.delivered_at

    @property
    def latency(self) -> dict:
        """Seconds per leg (None when a leg has not happened, or is not recorded).

        Server delivery: enqueue → claim (wait) → complete (work) → last reply row sent
        (delivery). Worker delivery: the worker sends before it completes, so work runs from
        the claim to the delivered time it reported, and there is no delivery leg of ours."""
        m, delivered = self.message, self.delivered_at
        if self.sent_by_worker:
            return {
                "mode": "worker",
                "wait": self._span(m.created_at, m.claimed_at),
                "work": self._span(m.claimed_at, delivered),
                "delivery": None,
                "total": self._span(m.created_at, delivered),
            }
        return {
            "mode": "server",
            "wait": self._span(m.created_at, m.claimed_at),
            "work": self._span(m.claimed_at, m.completed_at),
            "delivery": self._span(m.completed_at, delivered),
            "total": self._span(m.created_at, delivered or m.completed_at),
        }

    @property
    def tokens(self) -> tuple[int, int]:
        return (sum(u.input_tokens for u in self.usage), sum(u.output_tokens for u in self.usage))

    @property
    def cost(self):
        return sum((u.cost_usd for u in self.usage), start=0)


@dataclass
class Turn:
    """One bubble of the chat: a history entry, or a job's user text not yet in the history."""

    role: str
    text: str
    at: dt.datetime
    job: Job | None = None
    pending: bool = False  # the user's text from the queue (no history entry for it)


def chat_id_for(conversation: Conversation) -> str | None:
    """The Telegram chat the conversation talks in: its latest job's chat, else the chat of
    an active binding of it (a conversation paired but silent so far)."""
    latest = (
        Message.objects.filter(conversation=conversation)
        .order_by("-id")
        .values_list("payload", flat=True)
        .first()
    )
    chat = ((latest or {}).get("metadata") or {}).get("telegram_chat_id")
    if chat:
        return str(chat)
    binding = (
        IdentityBinding.objects.filter(
            conversation_id=conversation.conversation_id, status=IdentityBinding.ACTIVE
        )
        .exclude(telegram_chat_id="")
        .values_list("telegram_chat_id", flat=True)
        .first()
    )
    return binding or None


def page_data(conversation: Conversation) -> dict:
    """Everything the conversation page shows, in 11 queries whatever the conversation's
    size (``conversation.agent`` is expected to be selected with it)."""
    entries = list(
        ConversationEntry.objects.filter(conversation=conversation).order_by("-at", "-id")[
            :HISTORY_LIMIT
        ]
    )
    entries.reverse()
    messages = list(Message.objects.filter(conversation=conversation).order_by("-id")[:JOB_LIMIT])
    worker_delivery = conversation.agent.delivery == AgentProfile.WORKER_DELIVERY
    jobs = {m.pk: Job(m, worker_delivery=worker_delivery) for m in messages}
    wanted = set(jobs) | {e.source_message_id for e in entries if e.source_message_id}
    for attachment in MessageAttachment.objects.filter(message_id__in=wanted).order_by("id"):
        jobs.setdefault(attachment.message_id, Job(Message(pk=attachment.message_id)))
        jobs[attachment.message_id].attachments.append(attachment)
    for usage in JobUsage.objects.filter(message_id__in=list(jobs)).order_by("id"):
        jobs[usage.message_id].usage.append(usage)
    for row in OutboxMessage.objects.filter(job_id__in=list(jobs)).order_by("id"):
        jobs[row.job_id].outbox.append(row)
    turns = [Turn(e.role, e.content, e.at, jobs.get(e.source_message_id)) for e in entries]
    with_user_entry = {e.source_message_id for e in entries if e.role == "user"}
    oldest_entry = entries[0].at if entries else None
    for message in messages:
        if message.pk in with_user_entry or (oldest_entry and message.created_at < oldest_entry):
            continue
        text = (message.payload or {}).get("message_text") or ""
        if not text and not jobs[message.pk].attachments:
            continue  # nothing the user said (a push, a command with no text)
        turns.append(Turn("user", text, message.created_at, jobs[message.pk], pending=True))
    turns.sort(key=lambda t: t.at)
    return {
        "turns": turns,
        "entry_count": ConversationEntry.objects.filter(conversation=conversation).count(),
        "jobs": [jobs[m.pk] for m in messages],
        "job_count": Message.objects.filter(conversation=conversation).count(),
        "bindings": list(
            IdentityBinding.objects.filter(conversation_id=conversation.conversation_id)
            .order_by("-bound_at")
            .values("pk", "consumer_user_id", "status", "telegram_chat_id", "bound_at")
        ),
        "workers": list(
            Worker.objects.filter(assigned_conversation=conversation).values(
                "pk", "worker_id", "status", "provider"
            )
        ),
        "operator_messages": operator_messages(conversation),
        "history_limit": HISTORY_LIMIT,
        "job_limit": JOB_LIMIT,
    }


def operator_messages(conversation: Conversation) -> list[dict]:
    """The newest operator messages sent as the agent (their outbox rows, oldest first),
    each with who sent it (from the audit rows): two queries."""
    rows = list(OutboxMessage.objects.filter(conversation=conversation).order_by("-id")[:JOB_LIMIT])
    senders = {}
    for actor, details in (
        AuditEvent.objects.filter(
            action=SEND_AS_AGENT,
            target_type=conversation._meta.label_lower,
            target_id=str(conversation.pk),
        )
        .order_by("-id")
        .values_list("actor", "details")[:JOB_LIMIT]
    ):
        for row_id in (details or {}).get("outbox_ids") or []:
            senders[row_id] = actor
    return [{"row": row, "actor": senders.get(row.pk, "")} for row in reversed(rows)]


def send_as_agent(conversation: Conversation, text: str, *, actor: str) -> list[int]:
    """Queue ``text`` for the conversation's chat through the outbox (paced, retried, 429s
    honoured like every reply, SPEC §22), append it to the history as the agent's and audit
    who sent it, in one transaction; the sender starts after commit. Returns the outbox ids.

    Raises SendError, changing nothing, when it cannot be sent. A refusal by Telegram later
    (the user blocked the bot) shows on the row, in the page and the dashboard."""
    text = (text or "").strip()
    if not text:
        raise SendError("Write the text to send.")
    if len(text) > MAX_TEXT:
        raise SendError(f"At most {MAX_TEXT} characters (one Telegram message).")
    chat_id = chat_id_for(conversation)
    if chat_id is None:
        raise SendError("No Telegram chat is known for this conversation.")
    agent_key = conversation.agent.agent_key
    # Told now rather than left waiting in the outbox: the sender needs the token.
    try:
        client = agent_client(agent_key)
    except SecretUnavailable:
        raise SendError("The agent's bot token cannot be read: re-import it.")
    if client is None:
        raise SendError(f"Agent '{agent_key}' has no Telegram token: import one first.")
    now = timezone.now()
    with transaction.atomic():
        ids = write_rows(
            agent_key,
            chat_id,
            text,
            kind=OutboxMessage.OPERATOR,
            now=now,
            conversation=conversation,
        )
        entry = ConversationEntry.objects.create(
            conversation=conversation, role="assistant", content=text, at=now
        )
        Conversation.objects.filter(pk=conversation.pk).update(updated_at=now)
        record_audit(
            actor,
            SEND_AS_AGENT,
            conversation,
            chat_id=chat_id,
            entry_id=entry.pk,
            outbox_ids=ids,
            length=len(text),
        )
    return ids
