"""The outbox sender (SPEC §22): sends each bot's rows in order per chat, paced per bot and
per chat, with one sender per bot at a time (a lease on its ``OutboxBot`` row).

Outcomes per row: accepted → ``sent`` (and the job's ``delivered_at`` once its last part is
accepted); 429 → the row waits and the whole bot pauses for ``retry_after`` (other bots go
on); 5xx or a network error → retried with backoff, failed after ``MAX_ATTEMPTS``; any other
refusal (403 blocked by the user, 400 chat not found) → ``failed`` with the reason; 400
"can't parse entities" → the part is sent again as plain text.

A row is marked ``sending`` before the call and ``sent`` after it, so a crash in between is
the only window for a duplicate: the safety-net schedule puts rows stuck in ``sending`` for
``STUCK_AFTER`` back in the queue and counts them (``stuck_retries``).
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from django.db import transaction
from django.db.models import F, Max, Min, Q
from django.utils import timezone
from django_q.tasks import async_task

from agents import delivery_rows
from agents.secret_store import SecretUnavailable
from telegram.bot_api import TelegramApiError, TelegramError
from telegram.bots import agent_client
from telegram.outbox_media import send_media
from telegram.outbox_models import OutboxBot, OutboxMessage
from telegram.pacing import Pacer
from workers.models import Message
from workers.reply_uploads import mark_sent as mark_upload_sent

logger = logging.getLogger(__name__)

STUCK_AFTER = dt.timedelta(seconds=60)
SENDER_LEASE = dt.timedelta(seconds=60)
MAX_DRAIN_SECONDS = 25.0
MAX_ATTEMPTS = 8
MAX_BACKOFF_SECONDS = 300
BATCH = 200


def eligible_rows(agent_key: str, now: dt.datetime, limit: int = BATCH):
    """Due pending rows of the bot that are first in their chat (nothing earlier in the
    chat is still waiting or being sent), oldest first, at most ``limit``.

    The ids come first from one grouped pass over the bot's waiting rows (per chat: the
    smallest waiting id, kept when it is also the smallest due pending one), then the rows
    by primary key. Any form that joins the rows to their chat's earlier rows in one
    statement (NOT EXISTS, IN (grouped subquery)) went quadratic on PostgreSQL right after
    a broadcast, while the statistics still said the bot had no pending rows: 17–43 s per
    batch of 10,000 rows instead of milliseconds (bench/broadcast.py).
    """
    heads = (
        OutboxMessage.objects.filter(
            agent_key=agent_key, status__in=[OutboxMessage.PENDING, OutboxMessage.SENDING]
        )
        .values("chat_id")
        .annotate(
            first=Min("id"),
            first_due=Min(
                "id", filter=Q(status=OutboxMessage.PENDING, next_attempt_at__lte=now)
            ),
        )
        .filter(first=F("first_due"))
        .order_by("first")
        .values_list("first", flat=True)[:limit]
    )
    return OutboxMessage.objects.filter(pk__in=list(heads)).order_by("id")


def _take_lease(agent_key: str) -> bool:
    now = timezone.now()
    OutboxBot.objects.get_or_create(agent_key=agent_key)
    free = Q(sender_until__isnull=True) | Q(sender_until__lte=now)
    taken = OutboxBot.objects.filter(free, agent_key=agent_key).update(
        sender_until=now + SENDER_LEASE
    )
    return taken == 1


def _extend_lease(agent_key: str) -> None:
    OutboxBot.objects.filter(agent_key=agent_key).update(sender_until=timezone.now() + SENDER_LEASE)


def _release_lease(agent_key: str) -> None:
    OutboxBot.objects.filter(agent_key=agent_key).update(sender_until=None)


def _paused_until(agent_key: str, now: dt.datetime) -> dt.datetime | None:
    until = (
        OutboxBot.objects.filter(agent_key=agent_key).values_list("paused_until", flat=True).first()
    )
    return until if until and until > now else None


def drain_bot(
    agent_key: str,
    *,
    clock=time.monotonic,
    sleep=time.sleep,
    max_seconds: float = MAX_DRAIN_SECONDS,
    client=None,
) -> dict:
    """Send the bot's due rows for up to ``max_seconds``; returns counts per outcome."""
    counts = {"sent": 0, "failed": 0, "retry": 0, "paused": 0}
    deadline = clock() + max_seconds
    while clock() < deadline:
        if not _take_lease(agent_key):
            return counts  # another sender drains this bot right now
        try:
            _drain(agent_key, counts, clock, sleep, deadline, client)
        finally:
            _release_lease(agent_key)
        # A row committed while the lease was held found it taken: look once more.
        now = timezone.now()
        if counts["paused"] or _paused_until(agent_key, now):
            break
        if not eligible_rows(agent_key, now, limit=1).exists():
            break
    return counts


def _drain(agent_key, counts, clock, sleep, deadline, client) -> None:
    if client is None:
        try:
            client = agent_client(agent_key)
        except SecretUnavailable as exc:
            logger.error("Outbox of agent %s waits: %s", agent_key, exc)
            return
        if client is None:
            logger.warning("Outbox of agent %s waits: no bot token.", agent_key)
            return
    pacer = Pacer(clock)
    seeded: set[str] = set()
    while clock() < deadline:
        now = timezone.now()
        if _paused_until(agent_key, now):
            counts["paused"] += 1
            return
        rows = list(eligible_rows(agent_key, now))
        if not rows:
            return
        _seed_chats(pacer, agent_key, {r.chat_id for r in rows} - seeded, now)
        seeded.update(r.chat_id for r in rows)
        ready = [row for row in rows if pacer.chat_wait(row.chat_id) == 0]
        if not ready:
            wait = min(pacer.chat_wait(row.chat_id) for row in rows)
            if clock() + wait >= deadline:
                return
            sleep(wait)
            continue
        for row in ready:
            wait = pacer.bot_wait()
            if wait:
                sleep(wait)
            outcome = send_row(client, row, pacer)
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome == "paused":
                return
            if clock() >= deadline:
                return
        _extend_lease(agent_key)


def _seed_chats(pacer: Pacer, agent_key: str, chats: set[str], now: dt.datetime) -> None:
    """Chats that got a message from an earlier sender keep their spacing."""
    if not chats:
        return
    recent = (
        OutboxMessage.objects.filter(
            agent_key=agent_key,
            chat_id__in=chats,
            status=OutboxMessage.SENT,
            sent_at__gte=now - dt.timedelta(seconds=60),
        )
        .values("chat_id")
        .annotate(last=Max("sent_at"))
    )
    for item in recent:
        pacer.seed_chat(item["chat_id"], (now - item["last"]).total_seconds())


def _payload(row: OutboxMessage, *, plain: bool = False) -> dict:
    payload = {"chat_id": row.chat_id, "text": row.plain_text if plain else row.text}
    if row.parse_mode and not plain:
        payload["parse_mode"] = row.parse_mode
    if row.reply_markup:
        payload["reply_markup"] = row.reply_markup
    return payload


def _entities_refused(exc: TelegramApiError) -> bool:
    return exc.error_code == 400 and "entit" in (exc.description or "").lower()


def send_row(client, row: OutboxMessage, pacer: Pacer) -> str:
    """Send one row; returns ``sent``, ``failed``, ``retry``, ``paused`` or ``skipped``."""
    if not delivery_rows.claim(OutboxMessage, row.pk, timezone.now()):
        return "skipped"
    attempts = row.attempts + 1
    pacer.record(row.chat_id)
    plain = False
    try:
        try:
            result = _send(client, row)
        except TelegramApiError as exc:
            if not (row.parse_mode and _entities_refused(exc)):
                raise
            plain = True
            result = _send(client, row, plain=True)
    except TelegramApiError as exc:
        return _refused(row, exc, attempts)
    except TelegramError as exc:  # network: retried
        return _retry_later(row, str(exc), attempts)
    now = timezone.now()
    message_id = result.get("message_id") if isinstance(result, dict) else None
    # One commit for the row and the job's delivered_at: they change together, and each
    # commit is a WAL flush the next message waits for (bench/broadcast.py).
    with transaction.atomic():
        OutboxMessage.objects.filter(pk=row.pk).update(
            status=OutboxMessage.SENT,
            sent_at=now,
            telegram_message_id=message_id if isinstance(message_id, int) else None,
            sent_as_plain=plain,
            last_error="",
        )
        if row.media_upload_id:
            mark_upload_sent(row.media_upload_id)  # its file may go now
        _mark_delivered(row, now)
    return "sent"


def _send(client, row: OutboxMessage, *, plain: bool = False):
    if row.media_kind:
        return send_media(client, row, plain=plain)
    return client.call_once("sendMessage", _payload(row, plain=plain))


def _refused(row: OutboxMessage, exc: TelegramApiError, attempts: int) -> str:
    now = timezone.now()
    if exc.error_code == 429:
        pause = now + dt.timedelta(seconds=exc.retry_after or 1)
        OutboxBot.objects.filter(agent_key=row.agent_key).update(paused_until=pause)
        # Not the row's fault: the attempt is given back.
        OutboxMessage.objects.filter(pk=row.pk).update(
            status=OutboxMessage.PENDING,
            attempts=F("attempts") - 1,
            next_attempt_at=pause,
            sending_since=None,
            last_error=f"429: paused for {exc.retry_after or 1:g} s",
        )
        logger.warning("Bot of agent %s paused by Telegram until %s.", row.agent_key, pause)
        return "paused"
    if exc.error_code is None or exc.error_code >= 500:
        return _retry_later(row, str(exc), attempts)
    reason = f"{exc.error_code}: {exc.description}"[:500]
    delivery_rows.fail(OutboxMessage, row.pk, reason)
    logger.info("Outbox row %s refused by Telegram: %s", row.pk, reason)
    return "failed"


def _retry_later(row: OutboxMessage, error: str, attempts: int) -> str:
    return delivery_rows.retry_later(
        OutboxMessage,
        row.pk,
        error,
        attempts=attempts,
        now=timezone.now(),
        give_up=attempts >= MAX_ATTEMPTS,
        cap_seconds=MAX_BACKOFF_SECONDS,
    )


def _mark_delivered(row: OutboxMessage, now: dt.datetime) -> None:
    """``delivered_at`` once every part of the job's reply was accepted (SPEC §22)."""
    if row.job_id is None or row.kind != OutboxMessage.REPLY:
        return
    unsent = (
        OutboxMessage.objects.filter(job_id=row.job_id, kind=OutboxMessage.REPLY)
        .exclude(status=OutboxMessage.SENT)
        .exists()
    )
    if not unsent:
        Message.objects.filter(pk=row.job_id, delivered_at__isnull=True).update(delivered_at=now)


def recover_stuck_rows(now: dt.datetime | None = None) -> int:
    """Rows left in ``sending`` by a sender that died go back to the queue, counted: each
    may already have reached the chat (the one duplicate window)."""
    return delivery_rows.recover_stuck(OutboxMessage, now or timezone.now(), STUCK_AFTER)


def drain_outbox() -> dict:
    """The safety net (schedule, every minute): recover stuck rows, then start a sender for
    every bot with due rows."""
    now = timezone.now()
    recovered = recover_stuck_rows(now)
    bots = sorted(
        set(
            OutboxMessage.objects.filter(
                status=OutboxMessage.PENDING, next_attempt_at__lte=now
            ).values_list("agent_key", flat=True)
        )
    )
    for agent_key in bots:
        async_task("telegram.outbox_sender.drain_bot", agent_key, task_name="telegram-outbox")
    return {"recovered": recovered, "bots": len(bots)}
