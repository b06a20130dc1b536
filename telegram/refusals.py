"""What the webhook tells a refused user, and how often (SPEC §5.3 steps 5–6, §23).

The state is the ``IngressIssue`` rows of one (bot, Telegram user) in the last hour, read
through their index: every server sees the same rows, so the limits hold across servers.
"""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from telegram.models import IngressIssue

# One text for every refused pairing, whatever the reason: it must not reveal whether a
# code exists, was used or expired (the reason is recorded for the admin only).
PAIRING_REFUSED_TEXT = "This pairing link cannot be used. Ask for a new one."
PAIRED_TEXT = "You are paired. Send a message to talk to your agent."
PRIVATE_CHAT_ONLY_TEXT = (
    "Pairing works only in a private chat with me: open the pairing link, or send me "
    "the /start message directly."
)
PLEASE_PAIR_TEXT = "This bot only talks to paired users. Ask for a pairing link to get started."

# Budget cap reached (SPEC §24): said once per user per day; the admin sees the reason.
PAUSED_TEXT = "Sorry, I am paused for now and cannot take new messages. Please try again later."
PAUSED_NOTICE_WINDOW = dt.timedelta(days=1)

PAIRING_FAILURES_PER_HOUR = 5
WINDOW = dt.timedelta(hours=1)


def _recent(bot_identity: str, telegram_user_id: str, kind: str, window=WINDOW):
    return IngressIssue.objects.filter(
        bot_identity=bot_identity,
        telegram_user_id=telegram_user_id,
        kind=kind,
        created_at__gt=timezone.now() - window,
    )


def pairing_cooldown_active(bot_identity: str, telegram_user_id: str) -> bool:
    """True after PAIRING_FAILURES_PER_HOUR failed attempts within the last hour.

    Only attempts that looked a code up count (a refusal during the cooldown does not), so
    the user may try again an hour after the failures that caused it.
    """
    failures = _recent(bot_identity, telegram_user_id, IngressIssue.PAIRING_FAILED)
    return failures[:PAIRING_FAILURES_PER_HOUR].count() >= PAIRING_FAILURES_PER_HOUR


def please_pair_due(bot_identity: str, telegram_user_id: str) -> bool:
    """Whether this unbound user gets "please pair" now: once per user per hour."""
    unbound = _recent(bot_identity, telegram_user_id, IngressIssue.UNBOUND)
    return not unbound.filter(notified=True).exists()


def paused_notice_due(bot_identity: str, telegram_user_id: str) -> bool:
    """Whether this user hears "paused" now: once per user per day (SPEC §5.3 step 6a)."""
    paused = _recent(bot_identity, telegram_user_id, IngressIssue.PAUSED, PAUSED_NOTICE_WINDOW)
    return not paused.filter(notified=True).exists()
