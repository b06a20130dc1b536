"""The webhook's raw-SQL fast paths that admit an update (SPEC §5.3 steps 6a–7): the queue
cap, the queue row and the update record in one statement, with the sender's token in it
too when all is well (``telegram.sql`` has the rest of the app's fast paths; the split only
keeps modules short). Each has its steps as twin in tests/telegram/test_sql.py, run on
SQLite and PostgreSQL; names come from the models' metadata, values are always parameters.
"""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connection, connections

from agents.models import Conversation
from telegram.models import TelegramUpdate
from telegram.sql import _AVAILABLE, _QUOTA_TABLE, waiting_at_least
from workers import queue
from workers.models import Message
from workers.sql_cursor import prepared_cursor

# Admitting an update: queue cap, conversation, queue row, update record ---------------------


def _insert_fields(model, skip: tuple[str, ...] = ()) -> tuple[list, str, str]:
    """The fields of ``model``'s INSERT (all but the primary key and ``skip``), their
    quoted column list and placeholders."""
    quote = connection.ops.quote_name
    fields = [f for f in model._meta.concrete_fields if not f.primary_key and f.attname not in skip]
    columns = ", ".join(quote(f.column) for f in fields)
    return fields, columns, ", ".join(["%s"] * len(fields))


def _insert_values(obj, fields: list, conn) -> list:
    """``obj``'s values for ``fields``, prepared as the ORM's insert prepares them (``conn``:
    the connection itself, not the thread-local proxy that every access would resolve)."""
    return [f.get_db_prep_save(f.pre_save(obj, True), conn) for f in fields]


_ENQUEUE_PLANS: dict[str, tuple] = {}


def _enqueue_plan() -> tuple[str, list, list, list]:
    """The statement of ``enqueue_under_cap`` and the fields of its three inserts (built
    once per backend: the text is fixed, only the values change)."""
    if connection.vendor not in _ENQUEUE_PLANS:
        quote = connection.ops.quote_name
        conv_fields, conv_cols, conv_marks = _insert_fields(Conversation)
        msg_fields, msg_cols, msg_marks = _insert_fields(Message, skip=("conversation_id",))
        upd_fields, upd_cols, upd_marks = _insert_fields(TelegramUpdate, skip=("message_id",))
        conversations = quote(Conversation._meta.db_table)
        messages = quote(Message._meta.db_table)
        updates = quote(TelegramUpdate._meta.db_table)
        # Every part reads the snapshot the statement started with, so the count can only be
        # trusted because the sender's bucket row (telegram.quotas.take_token) was locked by
        # an earlier statement of this transaction: updates of one sender never run this at
        # once. The inserts happen only under the cap and into the conversation of this
        # agent; the conversation is created only when it does not exist (a new one holds no
        # message, and the cap is at least 1). When another transaction creates it
        # meanwhile, ON CONFLICT waits for that one and then inserts nothing, and the caller
        # falls back to the steps.
        sql = (
            f"WITH existing AS (SELECT id, agent_id FROM {conversations} "  # noqa: S608
            "WHERE conversation_id = %s), "
            "waiting AS (SELECT COUNT(*) AS n FROM (SELECT 1 FROM "
            f"{messages} m JOIN existing e ON e.id = m.conversation_id "
            "WHERE m.status IN (%s, %s) LIMIT %s) w), "
            f"created AS (INSERT INTO {conversations} ({conv_cols}) SELECT {conv_marks} "
            "WHERE NOT EXISTS (SELECT 1 FROM existing) "
            "ON CONFLICT (conversation_id) DO NOTHING RETURNING id, agent_id), "
            "target AS (SELECT id, agent_id FROM existing UNION ALL "
            "SELECT id, agent_id FROM created), "
            f"queued AS (INSERT INTO {messages} ({msg_cols}, {quote('conversation_id')}) "
            f"SELECT {msg_marks}, t.id FROM target t "
            "WHERE t.agent_id = %s AND (SELECT n FROM waiting) < %s RETURNING id), "
            f"recorded AS (INSERT INTO {updates} ({upd_cols}, {quote('message_id')}) "
            f"SELECT {upd_marks}, q.id FROM queued q RETURNING id) "
            "SELECT (SELECT n FROM waiting), (SELECT id FROM target), "
            "(SELECT agent_id FROM target), (SELECT id FROM queued), (SELECT id FROM recorded)"
        )
        _ENQUEUE_PLANS[connection.vendor] = (sql, conv_fields, msg_fields, upd_fields)
    return _ENQUEUE_PLANS[connection.vendor]


def _enqueue_under_cap_sql(
    prepared, cap: int, message: Message, row: TelegramUpdate
) -> tuple[str, list]:
    sql, conv_fields, msg_fields, upd_fields = _enqueue_plan()
    conversation = Conversation(conversation_id=prepared.conversation_id, agent=prepared.agent)
    conn = connections[DEFAULT_DB_ALIAS]
    params = [
        prepared.conversation_id,
        Message.QUEUED,
        Message.PROCESSING,
        cap,
        *_insert_values(conversation, conv_fields, conn),
        *_insert_values(message, msg_fields, conn),
        prepared.agent.pk,
        cap,
        *_insert_values(row, upd_fields, conn),
    ]
    return sql, params


def enqueue_under_cap(prepared, cap: int, row: TelegramUpdate) -> Message | None:
    """Enqueue ``prepared`` (a ``workers.queue.PreparedEnqueue``) and save ``row`` (the
    update's record, with the new message's id) unless the conversation already has ``cap``
    waiting messages: the message, or None when the cap refused it (nothing written).
    Raises ``EnqueueError`` (nothing written) when the conversation belongs to another
    agent and the cap did not refuse first.

    Inside the webhook's transaction, after the sender's bucket statement. One statement
    on PostgreSQL for an update without attachments. Twin (and the path elsewhere):
    ``waiting_at_least``, ``workers.queue.insert_prepared``, then ``row.save()``.
    """
    if connection.vendor == "postgresql" and not prepared.attachments:
        message = prepared.new_message(None)
        sql, params = _enqueue_under_cap_sql(prepared, cap, message, row)
        with prepared_cursor() as cursor:
            cursor.execute(sql, params)
            waiting, conversation_pk, agent_pk, message_pk, row_pk = cursor.fetchone()
        if waiting >= cap:
            return None
        if agent_pk is not None and agent_pk != prepared.agent.pk:
            raise queue.agent_mismatch(prepared.conversation_id, prepared.agent.agent_key)
        if message_pk is not None:
            # The instances as the steps leave them: saved, with their ids.
            message.pk, message.conversation_id = message_pk, conversation_pk
            message._state.adding = False
            row.pk, row.message_id, row._state.adding = row_pk, message_pk, False
            queue.request_reconcile_after_commit()
            return message
        # Created concurrently: nothing was written; the steps see that conversation now.
    return _enqueue_under_cap_in_steps(prepared, cap, row)


def _enqueue_under_cap_in_steps(prepared, cap: int, row: TelegramUpdate) -> Message | None:
    if waiting_at_least(prepared.conversation_id, cap):
        return None
    message = queue.insert_prepared(prepared).message
    row.message_id = message.pk
    row.save(force_insert=True)
    return message


# The common update in one statement, no transaction round trips -------------------------------

_AT_ONCE_PLANS: dict[str, tuple] = {}
# The backends that can write from a CTE (SQLite cannot).
ADMIT_AT_ONCE = {"postgresql": True}


def _named(fields: list, prefix: str) -> str:
    return ", ".join(f"%({prefix}{n})s" for n in range(len(fields)))


def _at_once_plan() -> tuple[str, list, list]:
    if connection.vendor not in _AT_ONCE_PLANS:
        quote = connection.ops.quote_name
        msg_fields, msg_cols, _ = _insert_fields(Message, skip=("conversation_id",))
        upd_fields, upd_cols, _ = _insert_fields(TelegramUpdate, skip=("message_id",))
        conversations = quote(Conversation._meta.db_table)
        messages = quote(Message._meta.db_table)
        updates = quote(TelegramUpdate._meta.db_table)
        # The bucket is written only when the whole update is admitted (a token, room under
        # the cap, an existing conversation of this agent) and only when its row is still
        # the version this statement's snapshot read (xmin): a concurrent update of the same
        # sender that committed meanwhile makes the WHERE fail, so the count, read from that
        # snapshot, is never trusted after another update of this sender got in. Then, and
        # in every other case, nothing is written and the caller takes the usual steps.
        sql = (
            f"WITH snap AS (SELECT xmin AS v FROM {_QUOTA_TABLE} "  # noqa: S608
            "WHERE bot_identity = %(bot)s AND telegram_user_id = %(user)s), "
            f"existing AS (SELECT id, agent_id FROM {conversations} "
            "WHERE conversation_id = %(conversation)s), "
            "waiting AS (SELECT COUNT(*) AS n FROM (SELECT 1 FROM "
            f"{messages} m JOIN existing e ON e.id = m.conversation_id "
            "WHERE m.status IN (%(queued)s, %(processing)s) LIMIT %(cap)s) w), "
            "ok AS (SELECT 1 FROM existing WHERE agent_id = %(agent)s "
            "AND (SELECT n FROM waiting) < %(cap)s), "
            f"bucket AS (INSERT INTO {_QUOTA_TABLE} "
            "(bot_identity, telegram_user_id, tokens, refilled_at, admitted) "
            "SELECT %(bot)s, %(user)s, %(burst)s - 1, %(now)s, %(yes)s "
            "WHERE EXISTS (SELECT 1 FROM ok) "
            "ON CONFLICT (bot_identity, telegram_user_id) DO UPDATE SET "
            f"tokens = {_AVAILABLE} - 1, admitted = %(yes)s, "
            f"refilled_at = CASE WHEN %(now)s > {_QUOTA_TABLE}.refilled_at "
            f"THEN %(now)s ELSE {_QUOTA_TABLE}.refilled_at END "
            f"WHERE {_QUOTA_TABLE}.xmin = (SELECT v FROM snap) AND {_AVAILABLE} >= 1 "
            "RETURNING 1), "
            f"queued AS (INSERT INTO {messages} ({msg_cols}, {quote('conversation_id')}) "
            f"SELECT {_named(msg_fields, 'm')}, e.id FROM existing e "
            "WHERE EXISTS (SELECT 1 FROM bucket) RETURNING id), "
            f"recorded AS (INSERT INTO {updates} ({upd_cols}, {quote('message_id')}) "
            f"SELECT {_named(upd_fields, 'u')}, q.id FROM queued q RETURNING id) "
            "SELECT (SELECT id FROM existing), (SELECT id FROM queued), "
            "(SELECT id FROM recorded)"
        )
        _AT_ONCE_PLANS[connection.vendor] = (sql, msg_fields, upd_fields)
    return _AT_ONCE_PLANS[connection.vendor]


def admit_at_once(
    prepared,
    row: TelegramUpdate,
    *,
    user_id: str,
    burst: float,
    per_second: float,
    cap: int,
    now: float,
) -> Message | None:
    """The common update in one statement on PostgreSQL, outside any transaction: take the
    sender's token, enqueue ``prepared`` into its existing conversation and save ``row``,
    all or nothing. The message, or None when this statement wrote nothing — the bucket had
    no token, the conversation is full, new or another agent's, another update of this
    sender got in concurrently, or not PostgreSQL — and the caller runs the usual steps
    (``telegram.quotas.take_token``, then ``enqueue_under_cap``, in one transaction), which
    decide and record every refusal as before.

    Twin: those steps, for an admitted update (tests/telegram/test_sql.py).
    """
    if connection.vendor != "postgresql" or prepared.attachments:
        return None
    sql, msg_fields, upd_fields = _at_once_plan()
    conn = connections[DEFAULT_DB_ALIAS]
    message = prepared.new_message(None)
    params = {
        "bot": row.bot_identity,
        "user": user_id,
        "conversation": prepared.conversation_id,
        "queued": Message.QUEUED,
        "processing": Message.PROCESSING,
        "cap": cap,
        "agent": prepared.agent.pk,
        "burst": float(burst),
        "per_second": float(per_second),
        "now": now,
        "yes": True,
    }
    params.update((f"m{n}", v) for n, v in enumerate(_insert_values(message, msg_fields, conn)))
    params.update((f"u{n}", v) for n, v in enumerate(_insert_values(row, upd_fields, conn)))
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        conversation_pk, message_pk, row_pk = cursor.fetchone()
    if message_pk is None:
        return None
    message.pk, message.conversation_id = message_pk, conversation_pk
    message._state.adding = False
    row.pk, row.message_id, row._state.adding = row_pk, message_pk, False
    queue.request_reconcile_after_commit()  # committed already: runs now
    return message
