"""Quotas at the webhook door (SPEC §23, §5.3 step 6a).

Two limits, checked after routing (the conversation is known) and before enqueue, inside
the webhook's transaction so the decision, the update record and the queue row commit or
roll back together:

- a token bucket per (bot, Telegram user): ``user_rate_per_minute`` tokens a minute, at
  most ``user_burst`` saved up; each admitted message takes one;
- a cap of ``conversation_queue_cap`` waiting (queued or processing) messages per
  conversation.

The bucket lives in the ``SenderQuota`` table and is changed by one upsert per update
(``telegram.sql.take_token``), so every web server shares it and two concurrent updates of
one sender are serialised by the row lock (PostgreSQL) or the write lock (SQLite); it never
admits more than burst + refill.
The queue cap counts without a lock, in a statement of its own after the bucket's (so
under PostgreSQL's read committed it sees what a concurrent update of the same sender
committed while this one waited for the bucket row): one sender's updates are serialised
by the bucket row, so only several senders writing into one group at the same instant can
pass the cap, by at most the number of their requests in flight.

A refused update is recorded with outcome ``throttled`` (so a redelivery is a duplicate)
and nothing is queued; the sender is told at most once a minute. Throttling is expected
and high-volume, so it writes no audit row: the update row (admin: Telegram › Telegram
updates, filter "throttled") and a log line per notice are the trail.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from agents.models import RuntimeConfig
from telegram import sql
from telegram.models import SenderQuota

logger = logging.getLogger(__name__)

NOTICE_INTERVAL_SECONDS = 60.0
NOTICE_TEXT = (
    "You are sending messages faster than I can take them, so I skipped your last one. "
    "Please wait a minute, then send it again."
)
# Buckets untouched this long are full again (any sane rate refills them in far less), so
# their rows carry no information and are pruned with the old update records.
SENDER_QUOTA_RETENTION_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Throttle:
    """Why an update was refused, and whether this refusal should tell the sender."""

    detail: str
    notify: bool


def check(bot_identity: str, telegram_user_id: str, conversation_id: str) -> Throttle | None:
    """None when the update may be enqueued; else the refusal. Call inside the webhook's
    transaction: a rollback then also returns the sender's token.

    The webhook runs the two steps apart (``take_token``, then the queue cap in the
    statement that enqueues, ``telegram.sql.enqueue_under_cap``); this is both in a row.
    """
    throttle = take_token(bot_identity, telegram_user_id)
    if throttle is not None:
        return throttle
    cap = queue_cap()
    if sql.waiting_at_least(conversation_id, cap):
        return queue_full(bot_identity, telegram_user_id, conversation_id, cap)
    return None


def take_token(bot_identity: str, telegram_user_id: str) -> Throttle | None:
    """The sender's token bucket: None when it had a token (now taken), else the refusal.
    Locks the sender's bucket row until the transaction ends, which serialises one
    sender's updates (so the queue cap, counted in a later statement, sees them)."""
    config = RuntimeConfig.get_cached()
    if _take_token(bot_identity, telegram_user_id, config, time.time()):
        return None
    detail = (
        f"Telegram user {telegram_user_id} is over {config.user_rate_per_minute} "
        f"messages/min (burst {config.user_burst})."
    )
    return _refusal(bot_identity, telegram_user_id, detail)


def queue_cap() -> int:
    return RuntimeConfig.get_cached().conversation_queue_cap


def queue_full(
    bot_identity: str, telegram_user_id: str, conversation_id: str, cap: int
) -> Throttle:
    """The refusal of an update whose conversation already holds ``cap`` waiting messages
    (the sender's bucket row exists: ``take_token`` ran first)."""
    return _refusal(bot_identity, telegram_user_id, _queue_full_detail(conversation_id, cap))


def _queue_full_detail(conversation_id: str, cap: int) -> str:
    return f"Conversation {conversation_id} already has {cap} waiting messages."


def _refusal(bot_identity: str, telegram_user_id: str, detail: str) -> Throttle:
    notify = _claim_notice(bot_identity, telegram_user_id, time.time())
    if notify:
        # One line per notice (at most one per sender a minute), not one per refusal.
        logger.warning("Throttled bot %s: %s", bot_identity, detail)
    return Throttle(detail=detail, notify=notify)


def _take_token(bot_identity: str, user_id: str, config: RuntimeConfig, now: float) -> bool:
    return sql.take_token(
        bot_identity,
        user_id,
        burst=config.user_burst,
        per_second=config.user_rate_per_minute / 60.0,
        now=now,
    )


def _claim_notice(bot_identity: str, user_id: str, now: float) -> bool:
    """True for the one refusal a minute that tells the sender (a conditional update, so two
    servers never both send it). A queue-cap refusal of a sender whose bucket row does not
    exist yet cannot happen: the bucket check before it always writes the row."""
    return bool(
        SenderQuota.objects.filter(bot_identity=bot_identity, telegram_user_id=user_id)
        .exclude(notified_at__gt=now - NOTICE_INTERVAL_SECONDS)
        .update(notified_at=now)
    )


def prune_sender_quotas(now: float | None = None) -> int:
    cutoff = (now if now is not None else time.time()) - SENDER_QUOTA_RETENTION_SECONDS
    deleted, _ = SenderQuota.objects.filter(refilled_at__lt=cutoff).delete()
    return deleted
