"""From an authenticated Telegram update to a pairing, a refusal or a queued message
(SPEC §5.3 steps 4–7). Every outcome is recorded by ``record`` and answered as a
``RouteResult``; ``telegram.webhook`` is the door in front."""

from __future__ import annotations

import datetime as dt
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.utils import timezone

from agents import budget, log_context
from agents.models import RuntimeConfig
from telegram import quotas, refusals, sql, sql_admit
from telegram.models import Bot, IdentityBinding, IngressIssue, TelegramUpdate
from telegram.outbox import send_notice
from telegram.pairing import (
    PairingError,
    chat_conversation_id,
    consume_pairing_code,
    resolve_binding,
)
from telegram.updates import Incoming, extract
from workers.models import Message
from workers.queue import EnqueueError, prepare_enqueue

# A message with media waits this long at most for its files before it is claimable anyway.
MEDIA_HOLD = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class SenderBinding:
    """The id of the active binding of (the bot, ``user_id``) as read with the bot's row
    (None: no binding), so routing need not ask again."""

    user_id: str
    pk: int | None


# ``handle``'s default: the update's parts are not extracted yet.
_EXTRACT = object()


@dataclass(frozen=True)
class RouteResult:
    status: str
    extra: dict = field(default_factory=dict)


def record(bot: Bot, update: dict, outcome: str, detail: str = "", message_id=None) -> None:
    """The update's one row: its outcome for the admin, and the dedupe key (a redelivery
    then fails on the unique (bot, update_id) and rolls back with everything else)."""
    update_row(bot, update, outcome, detail, message_id).save(force_insert=True)


def update_row(
    bot: Bot, update: dict, outcome: str, detail: str = "", message_id=None
) -> TelegramUpdate:
    """``record``'s row, not saved yet."""
    return TelegramUpdate(
        bot_identity=bot.bot_identity,
        update_id=update["update_id"],
        outcome=outcome,
        detail=detail[:300],
        message_id=message_id,
    )


def _task_after_commit(func: str, *args, task_name: str) -> None:
    """Queue a django-q2 task once the update's transaction has committed.

    robust: a broker that is down must not turn an update we already committed into a
    5xx (the task is lost, logged by Django; the update itself is safe).
    """
    from django_q.tasks import async_task

    transaction.on_commit(lambda: async_task(func, *args, task_name=task_name), robust=True)


def _reply_after_commit(bot: Bot, chat_id: str, text: str) -> None:
    """A notice through the outbox (SPEC §22): written with the update, in order with the
    chat's replies, sent once the transaction commits."""
    send_notice(bot.agent.agent_key, chat_id, text)


def pairing_code_in(text: str, bot_username: str) -> str | None:
    """The code of ``/start <code>`` (also ``/start@<this bot> <code>``, as sent in groups)."""
    parts = text.strip().split()
    if len(parts) != 2:
        return None
    command = parts[0]
    if "@" in command:
        command, _, addressee = command.partition("@")
        if not bot_username or addressee.lower() != bot_username.lower():
            return None
    return parts[1] if command == "/start" else None


def _answer_callback_after_commit(bot: Bot, update: dict) -> None:
    query = update.get("callback_query")
    query_id = query.get("id") if isinstance(query, dict) else None
    if not isinstance(query_id, str) or not query_id or len(query_id) > 64:
        return
    _task_after_commit(
        "telegram.tasks.answer_callback_query",
        bot.agent.agent_key,
        query_id,
        task_name="telegram-cbq",
    )


def handle(
    bot: Bot, update: dict, *, incoming=_EXTRACT, binding: SenderBinding | None = None
) -> RouteResult:
    """Record and answer an update of ``bot`` not seen before (SPEC §5.3 steps 4–7).

    ``incoming`` is ``extract(update)`` when the caller has it already, ``binding`` the
    sender's binding when read with the bot. Raises ``IntegrityError`` when the update was
    recorded concurrently (nothing of this one is kept then).
    """
    if incoming is _EXTRACT:
        incoming = extract(update)
    if incoming is None:
        with transaction.atomic():
            record(bot, update, "ignored")
        return RouteResult("ignored")
    return route(bot, update, incoming, binding)


def route(
    bot: Bot, update: dict, incoming: Incoming, binding: SenderBinding | None = None
) -> RouteResult:
    # A redelivery never gets here (the view answers it, or the update's unique row
    # raises), so a button press is answered once.
    result = _route(bot, update, incoming, binding)
    _answer_callback_after_commit(bot, update)
    return result


def _sender_binding(bot: Bot, incoming: Incoming, known: SenderBinding | None):
    """The sender's active binding on the bot (with its agent), or None; no query when
    ``known`` says there is none."""
    if known is None or known.user_id != incoming.user_id:
        return resolve_binding(bot.bot_identity, incoming.user_id)
    if known.pk is None:
        return None
    return IdentityBinding.objects.select_related("agent").filter(pk=known.pk).first()


def _route(bot: Bot, update: dict, incoming: Incoming, known: SenderBinding | None) -> RouteResult:
    code = pairing_code_in(incoming.text, bot.username)
    if code is not None:
        return _pair(bot, update, incoming, code)
    # SPEC §5.2: a binding is looked up by (bot, sender) and routes only a private chat into
    # the bound user's conversation. A group message always goes to the group's own
    # conversation with the bot's agent; there a binding only lets its member talk when the
    # agent requires one.
    binding = None
    if incoming.private or bot.agent.require_telegram_binding:
        binding = _sender_binding(bot, incoming, known)
    routed_binding = binding if incoming.private else None
    agent = routed_binding.agent if routed_binding is not None else bot.agent
    log_context.bind(agent_key=agent.agent_key)
    admitted = _admit_at_once(bot, update, incoming, agent, binding, routed_binding)
    if admitted is not None:
        return admitted
    with transaction.atomic():
        if binding is None and agent.require_telegram_binding:
            return _unbound(bot, update, incoming, agent)
        if not agent.enabled:
            return _unroutable(bot, update, incoming, f"Agent '{agent.agent_key}' is disabled.")
        conversation_id = (
            routed_binding.conversation_id
            if routed_binding is not None
            else chat_conversation_id(bot.bot_identity, incoming.chat_id)
        )
        throttle = quotas.take_token(bot.bot_identity, incoming.user_id)
        if throttle is not None:
            return _throttled(bot, update, incoming, throttle)
        return _admit(bot, update, incoming, agent, conversation_id, routed_binding)


def _admit_at_once(bot, update, incoming, agent, binding, routed_binding) -> RouteResult | None:
    """The common case — a sender with a token, an existing conversation of this agent
    with room — in one statement without a transaction (``telegram.sql_admit.admit_at_once``);
    None when that wrote nothing, and the steps below decide (and record) as they always
    have."""
    if (binding is None and agent.require_telegram_binding) or not agent.enabled:
        return None
    if not sql_admit.ADMIT_AT_ONCE.get(connection.vendor) or incoming.attachments:
        return None
    if budget.paused(agent) is not None:
        return None
    conversation_id = (
        routed_binding.conversation_id
        if routed_binding is not None
        else chat_conversation_id(bot.bot_identity, incoming.chat_id)
    )
    try:
        prepared = prepare_enqueue(
            conversation_id=conversation_id,
            agent_key=agent.agent_key,
            payload=_payload(bot, update, incoming, routed_binding),
            agent=agent,
        )
    except EnqueueError:
        return None
    config = RuntimeConfig.get_cached()
    row = update_row(bot, update, "enqueued")
    # Inside a caller's transaction (tests), a savepoint keeps a failed statement (a
    # concurrent duplicate) from spoiling it; a server has none, so no round trips.
    with transaction.atomic() if connection.in_atomic_block else nullcontext():
        message = sql_admit.admit_at_once(
            prepared,
            row,
            user_id=incoming.user_id,
            burst=config.user_burst,
            per_second=config.user_rate_per_minute / 60.0,
            cap=config.conversation_queue_cap,
            now=time.time(),
        )
    if message is None:
        return None
    log_context.bind(conversation_id=conversation_id, message_id=message.pk)
    return RouteResult("enqueued", {"message_id": message.pk})


def _admit(bot, update, incoming, agent, conversation_id, binding) -> RouteResult:
    """Past the sender's bucket: the conversation's queue cap, the budget, the enqueue, in
    SPEC §5.3 step 6a's order (a full queue is reported before a pause or a refusal).
    Inside the update's transaction."""
    cap = quotas.queue_cap()
    pause = budget.paused(agent)  # no side effect: asked first only to choose the path
    if pause is not None:
        if sql.waiting_at_least(conversation_id, cap):
            return _queue_full(bot, update, incoming, conversation_id, cap)
        return _paused(bot, update, incoming, pause)
    try:
        prepared = prepare_enqueue(
            conversation_id=conversation_id,
            agent_key=agent.agent_key,
            payload=_payload(bot, update, incoming, binding),
            scheduled_for=timezone.now() + MEDIA_HOLD if incoming.attachments else None,
            agent=agent,
        )
    except EnqueueError as exc:
        if sql.waiting_at_least(conversation_id, cap):
            return _queue_full(bot, update, incoming, conversation_id, cap)
        return _unroutable(bot, update, incoming, str(exc))
    row = update_row(bot, update, "enqueued")
    try:
        # Queue cap, conversation, queue row and this update's row: one statement on
        # PostgreSQL (telegram.sql_admit), after the bucket's own statement so that the count
        # sees what a concurrent update of the same sender committed meanwhile.
        message = sql_admit.enqueue_under_cap(prepared, cap, row)
    except EnqueueError as exc:
        return _unroutable(bot, update, incoming, str(exc))
    if message is None:
        return _queue_full(bot, update, incoming, conversation_id, cap)
    log_context.bind(conversation_id=conversation_id, message_id=message.pk)
    if incoming.attachments:
        _fetch_media_after_commit(message)
    return RouteResult("enqueued", {"message_id": message.pk})


def _queue_full(bot, update, incoming, conversation_id: str, cap: int) -> RouteResult:
    throttle = quotas.queue_full(bot.bot_identity, incoming.user_id, conversation_id, cap)
    return _throttled(bot, update, incoming, throttle)


def _unbound(bot: Bot, update: dict, incoming: Incoming, agent) -> RouteResult:
    # "Please pair" goes to a private chat only, once per user per hour; a group hears
    # nothing (the bot must not answer every unpaired member there).
    notify = incoming.private and refusals.please_pair_due(bot.bot_identity, incoming.user_id)
    record(bot, update, "unbound")
    detail = f"Telegram user {incoming.user_id} is not paired with '{agent.agent_key}'."
    _issue(bot, incoming, IngressIssue.UNBOUND, detail, notified=notify)
    if notify:
        _reply_after_commit(bot, incoming.chat_id, refusals.PLEASE_PAIR_TEXT)
    return RouteResult("unbound")


def _issue(bot: Bot, incoming: Incoming, kind: str, detail: str, *, notified=False) -> None:
    """An update we refused, listed for the operator (admin: ingress issues)."""
    IngressIssue.objects.create(
        bot_identity=bot.bot_identity,
        kind=kind,
        detail=detail,
        telegram_user_id=incoming.user_id,
        telegram_chat_id=incoming.chat_id,
        notified=notified,
    )


def _unroutable(bot: Bot, update: dict, incoming: Incoming, detail: str) -> RouteResult:
    record(bot, update, "unroutable", detail)
    _issue(bot, incoming, "unroutable", detail[:300])
    return RouteResult("unroutable")


def _throttled(
    bot: Bot, update: dict, incoming: Incoming, throttle: quotas.Throttle
) -> RouteResult:
    # Recorded, so a redelivery is a duplicate; not queued (SPEC §5.3 step 6a).
    record(bot, update, "throttled", throttle.detail)
    if throttle.notify:
        _reply_after_commit(bot, incoming.chat_id, quotas.NOTICE_TEXT)
    return RouteResult("throttled")


def _paused(bot: Bot, update: dict, incoming: Incoming, pause: budget.Pause) -> RouteResult:
    # Budget cap reached (SPEC §24, §5.3 step 6a): recorded, not queued, one polite notice
    # per user per day (the IngressIssue rows are the shared state, as for "please pair").
    notify = refusals.paused_notice_due(bot.bot_identity, incoming.user_id)
    record(bot, update, "paused", pause.detail)
    _issue(bot, incoming, IngressIssue.PAUSED, pause.detail[:300], notified=notify)
    if notify:
        _reply_after_commit(bot, incoming.chat_id, refusals.PAUSED_TEXT)
    return RouteResult("paused")


def _payload(bot: Bot, update: dict, incoming: Incoming, binding) -> dict:
    retention = RuntimeConfig.get_cached().telegram_attachment_retention_seconds
    expires = (timezone.now() + dt.timedelta(seconds=retention)).isoformat()
    metadata = {
        "bot_identity": bot.bot_identity,
        "telegram_chat_id": incoming.chat_id,
        "telegram_user_id": incoming.user_id,
        "update_id": str(update["update_id"]),
    }
    if binding is not None:
        metadata["consumer_user_id"] = binding.consumer_user_id
    payload = {
        "provider": "telegram",
        "provider_user_id": incoming.user_id,
        "message_text": incoming.text,
        "metadata": metadata,
        "raw_update": update,
    }
    if incoming.message_id:
        payload["external_message_id"] = incoming.message_id
    if incoming.attachments:
        payload["attachments"] = [{**a, "expires_at": expires} for a in incoming.attachments]
    return payload


def _fetch_media_after_commit(message: Message) -> None:
    # If the task cannot be queued, the message is claimable anyway once MEDIA_HOLD has
    # passed, with its attachments' file ids.
    _task_after_commit(
        "telegram.media.fetch_message_attachments", message.pk, task_name="telegram-media"
    )


def _pair(bot: Bot, update: dict, incoming: Incoming, code: str) -> RouteResult:
    # One transaction for the pairing and the update record: a concurrent redelivery
    # fails on the record's unique key and rolls back with nothing written. An expired code
    # is marked in its own (committed) savepoint inside consume_pairing_code, so that
    # survives the refusal.
    with transaction.atomic():
        if not incoming.private:
            # A group is never private (SPEC §5.2): the code is not even looked up, so
            # nothing is consumed and it is no guess for the cooldown.
            record(bot, update, "pairing_failed", "private_chat_only")
            _reply_after_commit(bot, incoming.chat_id, refusals.PRIVATE_CHAT_ONLY_TEXT)
            return RouteResult("pairing_failed", {"detail": "private_chat_only"})
        if refusals.pairing_cooldown_active(bot.bot_identity, incoming.user_id):
            return _pairing_refused(
                bot,
                update,
                incoming,
                "cooldown",
                f"{refusals.PAIRING_FAILURES_PER_HOUR} failed attempts within an hour",
            )
        try:
            consume_pairing_code(
                code,
                bot_identity=bot.bot_identity,
                telegram_user_id=incoming.user_id,
                telegram_chat_id=incoming.chat_id,
            )
        except PairingError as exc:
            return _pairing_refused(bot, update, incoming, exc.reason, str(exc))
        record(bot, update, "paired")
        _reply_after_commit(bot, incoming.chat_id, refusals.PAIRED_TEXT)
    return RouteResult("paired")


def _pairing_refused(
    bot: Bot, update: dict, incoming: Incoming, reason: str, explanation: str
) -> RouteResult:
    """Record the reason for the admin; tell the user the same thing whatever it was."""
    record(bot, update, "pairing_failed", reason)
    detail = f"Pairing by Telegram user {incoming.user_id} refused ({reason}): {explanation}."
    IngressIssue.objects.create(
        bot_identity=bot.bot_identity,
        kind=IngressIssue.PAIRING_COOLDOWN if reason == "cooldown" else IngressIssue.PAIRING_FAILED,
        detail=detail[:300],
        telegram_user_id=incoming.user_id,
        telegram_chat_id=incoming.chat_id,
    )
    _reply_after_commit(bot, incoming.chat_id, refusals.PAIRING_REFUSED_TEXT)
    return RouteResult("pairing_failed", {"detail": reason})
