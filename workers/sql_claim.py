"""The claim's raw-SQL fast paths (SPEC §6.2), the part of ``workers/sql.py``'s room that
only the claim uses: its locks, its candidate and take statements (the warm worker's whole
claim in one round trip is built of them in ``workers/sql_warm_claim.py``). Like every fast
path, each has a QuerySet twin that tests/workers/test_sql_twins.py runs against it on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt

from django.db import connection

from agents.models import Conversation
from workers.models import ConversationQueue, Message, Worker
from workers.sql import (
    WITH_TOKEN_OWNER,
    OwnerColumn,
    _assignments,
    _owner,
    _table,
    locked,
    update,
)
from workers.sql import value_sql as _value_sql
from workers.sql_cursor import first_instance, prepared_cursor
from workers.sql_cursor import statement_text as _text

# What a claim reads of the rows it locks and takes; the rest stay deferred (loaded only if
# touched), as with ``only()``: every column read costs the request its conversion.
CLAIM_CONVERSATION_FIELDS = (
    "id",
    "conversation_id",
    "agent_id",
    "handoff_from_worker",
    "handoff_until",
)
LOCKED_WORKER_FIELDS = (
    "id",
    "worker_id",
    "status",
    "heartbeat_at",
    "created_at",
    "assigned_conversation_id",
    "assigned_at",
)
# The job the claim hands out (its lease fields are the values the claim wrote).
TAKEN_MESSAGE_FIELDS = (
    "id",
    "conversation_id",
    "agent_key",
    "payload",
    "priority",
    "attempts",
    "max_attempts",
    "delivered_at",
)


def _column_list(model, alias: str, names) -> str:
    quote, meta = connection.ops.quote_name, model._meta
    return ", ".join(f"{alias}.{quote(meta.get_field(name).column)}" for name in names)


def locked_worker_and_conversation(worker_pk: int) -> tuple[Worker, Conversation | None]:
    """``locked(Worker, pk)`` and, when it is assigned, ``locked(Conversation, its
    conversation)``: the claim's first two locks, in that order, in one round trip on
    PostgreSQL (bench/claim_throughput.py). The worker carries only ``LOCKED_WORKER_FIELDS``
    and the conversation only ``CLAIM_CONVERSATION_FIELDS``.

    Twin (and the path elsewhere): the two ``locked`` calls.
    """
    if connection.vendor != "postgresql":
        worker = locked(Worker, worker_pk)
        if worker.assigned_conversation_id is None:
            return worker, None
        return worker, locked(Conversation, worker.assigned_conversation_id)
    worker = first_instance(Worker, _text(_locked_worker_sql), [worker_pk])
    if worker is None:
        raise Worker.DoesNotExist(f"No Worker with id {worker_pk}.")
    if worker.assigned_conversation_id is None:
        return worker, None
    if worker.c_id is None:  # assigned after this statement's snapshot: lock it by itself
        return worker, locked(Conversation, worker.assigned_conversation_id)
    return worker, locked_conversation(worker)


def locked_conversation(worker: Worker) -> Conversation:
    """The conversation row locked with the worker (its ``c_*`` columns)."""
    values = [getattr(worker, f"c_{name}") for name in CLAIM_CONVERSATION_FIELDS]
    return Conversation.from_db(connection.alias, list(CLAIM_CONVERSATION_FIELDS), values)


def _locked_worker_sql(by_token: bool = False) -> str:
    """``by_token``: the worker is the token's owner (parameters: prefix, hash), not a pk."""
    quote = connection.ops.quote_name
    # These attribute names are the column names too.
    columns = ", ".join(f"c.{quote(name)} AS c_{name}" for name in CLAIM_CONVERSATION_FIELDS)
    me = f"{WITH_TOKEN_OWNER}, " if by_token else ""
    pk = _value_sql("id" if by_token else None)
    return (
        f"WITH {me}w AS (SELECT * FROM {_table(Worker)} WHERE id = {pk} "  # noqa: S608
        "FOR NO KEY UPDATE) "
        f"SELECT {_column_list(Worker, 'w', LOCKED_WORKER_FIELDS)}, {columns} "
        f"FROM w LEFT JOIN LATERAL (SELECT * FROM {_table(Conversation)} "
        "WHERE id = w.assigned_conversation_id FOR NO KEY UPDATE) c ON true"
    )


def next_ready_in_conversation(
    worker_pk: int, conversation_pk: int, now: dt.datetime, live_cutoff: dt.datetime
) -> Message | None:
    """The next ready message of the conversation in claim order, locked, annotated
    ``busy`` (some message of the conversation is processing) and ``owned_by_other``
    (another live worker is assigned to it): the one query of a warm worker's claim.

    Twin: ``Message.objects.ready(now).filter(conversation=…).in_claim_order().first()``,
    with ``busy`` and ``owned_by_other`` as two ``exists()`` (see the twin test).
    """
    sql, params = next_ready_query(worker_pk, conversation_pk, now, live_cutoff)
    return first_instance(Message, sql, params)


def next_ready_query(
    worker_pk: int, conversation_pk: int, now: dt.datetime, live_cutoff: dt.datetime
) -> tuple[str, list]:
    """The SQL and parameters of ``next_ready_in_conversation`` (the benchmark EXPLAINs it).

    Status values are literals so PostgreSQL can match the partial index
    ``msg_conversation_ready_idx``; the rest are parameters.
    """
    datetime_param = Message._meta.get_field("scheduled_for").get_db_prep_value
    params = _bound(
        conversation_pk,
        conversation_pk,
        datetime_param(live_cutoff, connection),
        worker_pk,
        conversation_pk,
        datetime_param(now, connection),
    )
    return _text(_next_ready_sql, _owner(worker_pk), _owner(conversation_pk)), params


def _bound(*values) -> list:
    """The parameters among ``values``: an ``OwnerColumn`` is in the statement's text."""
    return [value for value in values if not isinstance(value, OwnerColumn)]


def _next_ready_sql(pk_owner: str | None = None, conversation_owner: str | None = None) -> str:
    """``*_owner``: the worker's pk, its conversation's, as columns of ``me`` (by token)."""
    quote = connection.ops.quote_name
    message_table = quote(Message._meta.db_table)
    worker_table = quote(Worker._meta.db_table)
    lock = " FOR UPDATE OF m" if connection.features.has_select_for_update_of else ""
    pk, conversation = _value_sql(pk_owner), _value_sql(conversation_owner)
    return (
        "SELECT m.*, "  # noqa: S608 (table names and constants, never input)
        f"EXISTS (SELECT 1 FROM {message_table} p WHERE p.conversation_id = {conversation} "
        f"AND p.status = '{Message.PROCESSING}') AS busy, "
        f"EXISTS (SELECT 1 FROM {worker_table} w WHERE w.assigned_conversation_id = "
        f"{conversation} AND w.status = '{Worker.ACTIVE}' AND w.heartbeat_at >= %s "
        f"AND w.id <> {pk}) AS owned_by_other "
        f"FROM {message_table} m WHERE m.conversation_id = {conversation} "
        f"AND m.status = '{Message.QUEUED}' AND m.scheduled_for <= %s "
        f"ORDER BY m.priority DESC, m.scheduled_for ASC, m.id ASC LIMIT 1{lock}"
    )


def claim_next_ready(
    worker_pk: int,
    conversation_pk: int,
    now: dt.datetime,
    live_cutoff: dt.datetime,
    message_values: dict,
    worker_values: dict,
) -> Message | None:
    """``next_ready_in_conversation``, and when that message is free to take (the
    conversation is neither ``busy`` nor ``owned_by_other``) its lease and the worker's
    assignment written: ``taken`` says whether they were. The worker's
    ``assigned_agent_key`` is the message's. One statement on PostgreSQL.

    Only sound with the conversation row already locked by an earlier statement (see
    ``claim._claim_in_conversation``). Twin (and the path elsewhere): the read, then two
    ``update`` calls.
    """
    if connection.vendor != "postgresql":
        return _claim_next_ready_in_steps(
            worker_pk, conversation_pk, now, live_cutoff, message_values, worker_values
        )
    candidate, candidate_params = next_ready_query(worker_pk, conversation_pk, now, live_cutoff)
    message_set, message_params = _assignments(Message, message_values)
    worker_set, worker_params = _assignments(Worker, worker_values)
    sql = _text(_claim_next_ready_sql, candidate, message_set, worker_set)
    params = candidate_params + message_params + worker_params + [worker_pk]
    return first_instance(Message, sql, params)


def _claim_next_ready_sql(candidate: str, message_set: str, worker_set: str) -> str:
    return (
        f"WITH candidate AS ({candidate}), "  # noqa: S608
        f"{_take_sql(message_set, worker_set, guarded=False)} "
        f"SELECT {_take_columns()} FROM candidate"
    )


def _take_sql(message_set: str, worker_set: str, *, guarded: bool, pk: str = "%s") -> str:
    """The take's two writes (of ``candidate``); ``guarded``: only if ``fit`` has a row.
    ``pk``: how the statement names the worker's pk (a parameter, or a column of ``me``)."""
    guard = "AND EXISTS (SELECT 1 FROM fit) " if guarded else ""
    return (
        f"taken AS (UPDATE {_table(Message)} AS u SET {message_set} FROM candidate "  # noqa: S608
        "WHERE u.id = candidate.id AND NOT candidate.busy AND NOT candidate.owned_by_other "
        f"{guard}RETURNING u.id), "
        f"assigned AS (UPDATE {_table(Worker)} SET {worker_set}, "
        "assigned_agent_key = (SELECT agent_key FROM candidate) "
        f"WHERE id = {pk} AND EXISTS (SELECT 1 FROM taken) RETURNING 1)"
    )


def _take_columns() -> str:
    return (
        f"{_column_list(Message, 'candidate', TAKEN_MESSAGE_FIELDS)}, candidate.busy, "  # noqa: S608
        "candidate.owned_by_other, EXISTS (SELECT 1 FROM taken) AS taken"
    )


def _in_handoff(worker_id: str = "%s") -> str:
    """``Conversation.in_handoff_for`` of conversation ``c`` (parameters: now, then the
    worker's id unless ``worker_id`` names it otherwise)."""
    return f"(c.handoff_until > %s AND c.handoff_from_worker <> {worker_id})"


def _claim_next_ready_in_steps(
    worker_pk, conversation_pk, now, live_cutoff, message_values, worker_values
) -> Message | None:
    message = next_ready_in_conversation(worker_pk, conversation_pk, now, live_cutoff)
    if message is None:
        return None
    message.taken = not (message.busy or message.owned_by_other)
    if message.taken:
        update(Message, message_values, ("pk", "=", message.pk))
        worker_values = {**worker_values, "assigned_agent_key": message.agent_key}
        update(Worker, worker_values, ("pk", "=", worker_pk))
    return message


def claimable_conversations(
    worker: Worker, now: dt.datetime, live_cutoff: dt.datetime, excluded: list[int], limit: int
) -> tuple[list[int], list[int]]:
    """Where an unassigned worker's claim must look, read off ``ConversationQueue`` (the
    per-conversation marker the message triggers keep): ``(free, doubtful)``.

    ``free``: up to ``limit`` conversations with no processing message whose first queued
    message is due, best first, skipping those another live worker owns or that wait for a
    handoff (never more than the claim itself skips). Read through ``convq_free_idx``, so the
    busy conversations ahead cost nothing, however many there are.
    ``doubtful``: every other conversation that may hold the best ready message: free ones
    whose first message is not due yet (a due one of lower priority may wait behind it), and
    busy ones whose lease may have run out. Both are few (backoffs, dying leases).

    The claim runs its full candidate query over these only. Twin: the same three filters on
    ``ConversationQueue.objects`` (see the twin test).
    """
    query, params = claimable_conversations_query(worker, now, live_cutoff, excluded, limit)
    with prepared_cursor() as cursor:
        cursor.execute(query, params)
        rows = cursor.fetchall()
    free = [conversation for tag, conversation in rows if tag == 1]
    doubtful = [conversation for tag, conversation in rows if tag == 0]
    return free, doubtful


def claimable_conversations_query(
    worker: Worker, now: dt.datetime, live_cutoff: dt.datetime, excluded: list[int], limit: int
) -> tuple[str, list]:
    """The SQL and parameters of ``claimable_conversations`` (the benchmark EXPLAINs it):
    rows ``(1, id)`` for the free conversations, ``(0, id)`` for the doubtful ones, in one
    round trip."""
    quote = connection.ops.quote_name
    queue = _table(ConversationQueue)
    worker_table = _table(Worker)
    conversation_table = quote(Conversation._meta.db_table)
    when = Message._meta.get_field("scheduled_for").get_db_prep_value
    now_param, cutoff_param = when(now, connection), when(live_cutoff, connection)
    skip = ""
    if excluded:
        skip = f"AND q.conversation_id NOT IN ({', '.join(['%s'] * len(excluded))}) "
    free_sql = (
        f"SELECT q.conversation_id FROM {queue} q "  # noqa: S608 (names, never input)
        "WHERE q.busy = false AND q.head_id IS NOT NULL AND q.head_scheduled_for <= %s "
        f"{skip}"
        f"AND NOT EXISTS (SELECT 1 FROM {worker_table} w "
        "WHERE w.assigned_conversation_id = q.conversation_id "
        f"AND w.status = '{Worker.ACTIVE}' AND w.heartbeat_at >= %s AND w.id <> %s) "
        f"AND NOT EXISTS (SELECT 1 FROM {conversation_table} c WHERE c.id = q.conversation_id "
        f"AND {_in_handoff()}) "
        "ORDER BY q.head_priority DESC, q.head_scheduled_for ASC, q.head_id ASC LIMIT %s"
    )
    doubtful_sql = (
        f"SELECT 0, q.conversation_id FROM {queue} q "  # noqa: S608
        "WHERE q.busy = false AND q.head_id IS NOT NULL AND q.head_scheduled_for > %s "
        f"UNION ALL SELECT 0, q.conversation_id FROM {queue} q "
        "WHERE q.busy = true AND (q.busy_until IS NULL OR q.busy_until <= %s)"
    )
    free_params = [now_param, *excluded, cutoff_param, worker.pk, now_param, worker.worker_id]
    return (
        f"SELECT 1, f.conversation_id FROM ({free_sql}) f UNION ALL {doubtful_sql}",  # noqa: S608
        [*free_params, limit, now_param, now_param],
    )
