"""The queue's raw-SQL fast paths, all in one room (ARCHITECTURE.md).

Claim, heartbeat, complete and enqueue run a handful of fixed-shape statements per request,
and the ORM spends longer compiling each one than the database spends running it
(bench/claim_throughput.py, bench/webhook_ingest.py). Each function here has a QuerySet twin
that says the same thing in the ORM; tests/workers/test_sql_twins.py runs both on SQLite and
PostgreSQL with the same data and asserts the same answer. Values are prepared by the
models' own fields, so both backends see exactly what the ORM would send; table and column
names come from the models, never from input. The claim's own statements are next door, in
``workers/sql_claim.py`` and ``workers/sql_warm_claim.py``; how they all run is
``workers/sql_cursor.py``.
"""

from __future__ import annotations

from typing import NamedTuple

from django.db import connection, transaction

from agents.models import Conversation
from workers.models import Message, Worker
from workers.sql_cursor import first_instance, prepared_cursor
from workers.sql_cursor import statement_text as _text

# ``(field, operator, value)`` conditions of ``update``: the only operators it needs.
OPERATORS = ("=", ">")


def update(model, values: dict, *where: tuple[str, str, object]) -> int:
    """``model.objects.filter(<where>).update(**values)``; returns the rows changed.

    ``where`` holds ``(field, operator, value)`` triples, operator ``=`` or ``>``.
    """
    assignments, params = _assignments(model, values)
    conditions, condition_params = _conditions(model, where)
    sql = _text(_update_sql, model, assignments, conditions)
    with prepared_cursor() as cursor:
        cursor.execute(sql, params + condition_params)
        return cursor.rowcount


def _update_sql(model, assignments: str, conditions: str) -> str:
    return f"UPDATE {_table(model)} SET {assignments} WHERE {conditions}"  # noqa: S608


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _assignments(model, values: dict) -> tuple[str, list]:
    meta = model._meta
    params = [
        meta.get_field(name).get_db_prep_save(v, connection)
        for name, v in values.items()
        if not isinstance(v, OwnerColumn)
    ]
    shape = tuple((name, _owner(value)) for name, value in values.items())
    return _text(_assignments_sql, model, shape), params


def _owner(value) -> str | None:
    """What a statement's text has for ``value``: a parameter (None) or a column of ``me``."""
    return value.column if isinstance(value, OwnerColumn) else None


def _assignments_sql(model, shape: tuple[tuple[str, str | None], ...]) -> str:
    quote, meta = connection.ops.quote_name, model._meta
    return ", ".join(
        f"{quote(meta.get_field(name).column)} = {value_sql(owner)}" for name, owner in shape
    )


class OwnerColumn(NamedTuple):
    """A value of ``update``'s ``values`` or ``where`` in a statement that authenticates by
    token: this column of ``me``, the token's owner (``TOKEN_OWNER``)."""

    column: str

    def of(self, worker: Worker):
        """The value it stands for, read off the owner's row."""
        return getattr(worker, self.column)


# The owner's worker id, pk and assigned conversation, as statements by token name them.
TOKEN_OWNER_ID = OwnerColumn("worker_id")
TOKEN_OWNER_PK = OwnerColumn("id")
TOKEN_OWNER_CONVERSATION = OwnerColumn("assigned_conversation_id")


def value_sql(owner_column: str | None) -> str:
    """A parameter, or the owner's ``owner_column`` (see ``OwnerColumn``)."""
    return "%s" if owner_column is None else f"(SELECT {owner_column} FROM me)"  # noqa: S608


def _conditions(model, where) -> tuple[str, list]:
    meta, params = model._meta, []
    for name, operator, value in where:
        field = meta.pk if name == "pk" else meta.get_field(name)
        assert operator in OPERATORS and value is not None
        if not isinstance(value, OwnerColumn):
            params.append(field.get_db_prep_value(value, connection))
    shape = tuple((name, operator, _owner(value)) for name, operator, value in where)
    return _text(_conditions_sql, model, shape), params


def _conditions_sql(model, shape: tuple[tuple[str, str, str | None], ...]) -> str:
    quote, meta = connection.ops.quote_name, model._meta
    return " AND ".join(
        f"{quote((meta.pk if name == 'pk' else meta.get_field(name)).column)} {operator} "
        f"{value_sql(owner)}"
        for name, operator, owner in shape
    )


def finish_job(fence, message_values: dict, worker_pk: int, worker_values: dict) -> bool:
    """The fenced write of a job's end and, only when it lands, its worker's: whether it
    landed. One statement on PostgreSQL (atomic by itself, no transaction round trips).

    Twin (and the path elsewhere): ``update(Message, …, *fence)``, then
    ``update(Worker, …)`` if it changed a row, in one transaction.
    """
    if connection.vendor != "postgresql":
        return _finish_job_in_steps(fence, message_values, worker_pk, worker_values)
    message_set, message_params = _assignments(Message, message_values)
    fence_sql, fence_params = _conditions(Message, fence)
    worker_set, worker_params = _assignments(Worker, worker_values)
    sql = _text(_finish_job_sql, message_set, fence_sql, worker_set)
    with prepared_cursor() as cursor:
        cursor.execute(sql, message_params + fence_params + worker_params + [worker_pk])
        return cursor.fetchone()[0] == 1


def _finish_job_sql(message_set: str, fence_sql: str, worker_set: str) -> str:
    return (
        f"WITH done AS (UPDATE {_table(Message)} SET {message_set} "  # noqa: S608
        f"WHERE {fence_sql} RETURNING 1), "
        f"idle AS (UPDATE {_table(Worker)} SET {worker_set} "
        "WHERE id = %s AND EXISTS (SELECT 1 FROM done) RETURNING 1) "
        "SELECT (SELECT count(*) FROM done), (SELECT count(*) FROM idle)"
    )


def _finish_job_in_steps(fence, message_values, worker_pk, worker_values) -> bool:
    with transaction.atomic():
        if update(Message, message_values, *fence) != 1:
            return False
        update(Worker, worker_values, ("pk", "=", worker_pk))
        return True


# The worker a presented token belongs to, as ``workers.tokens.owner`` finds it: the newest
# unrevoked worker with the token's prefix, kept only if its stored hash is the token's
# (parameters: prefix, hash). At most one row; the statements that use it call it ``me``.
# The database compares the hashes, not ``hmac.compare_digest``: its time tells at most how
# much of a keyed hash matches, which no one without the key can use.
TOKEN_OWNER = (
    "SELECT id, worker_id, assigned_conversation_id FROM (SELECT id, worker_id, "  # noqa: S608
    f"assigned_conversation_id, token_hash FROM {_table(Worker)} WHERE token_prefix = %s "
    "AND token_revoked_at IS NULL ORDER BY created_at DESC LIMIT 1) newest "
    "WHERE token_hash = %s AND token_hash <> ''"
)
# The ``WITH`` entry that names it ``me``, first in every statement by token.
WITH_TOKEN_OWNER = f"me AS ({TOKEN_OWNER})"


def writes_by_token() -> bool:
    """Whether ``write_by_token`` can run here: PostgreSQL (writes inside ``WITH``)."""
    return connection.vendor == "postgresql"


def write_by_token(
    token, message_values: dict, fence, worker_values: dict, *, worker_beat_before=None
) -> str | None:
    """A fenced call's whole write for the worker owning ``token`` (a
    ``workers.tokens.WorkerToken``), in one statement with its authentication (PostgreSQL
    only): ``update(Message, message_values, *fence)``, the fence naming the worker as
    ``("claimed_by", "=", TOKEN_OWNER_ID)``, and, only when that lands,
    ``update(Worker, worker_values)`` of the owner (only if its ``heartbeat_at`` is null or
    before ``worker_beat_before``, when that is given). Returns the owner's ``worker_id``
    when the message write landed, else None: the token has no owner, or the fence did not
    hold, and nothing was written.

    Twin (and the path elsewhere): ``tokens.owner(token)``, then the ``update`` calls
    (tests/workers/test_fenced_by_token.py).
    """
    message_set, message_params = _assignments(Message, message_values)
    fence_sql, fence_params = _conditions(Message, fence)
    worker_set, worker_params = _assignments(Worker, worker_values)
    beat = worker_beat_before is not None
    sql = _text(_write_by_token_sql, message_set, fence_sql, worker_set, beat)
    params = [token.prefix, token.digest, *message_params, *fence_params, *worker_params]
    if beat:
        params.append(
            Worker._meta.get_field("heartbeat_at").get_db_prep_value(worker_beat_before, connection)
        )
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return row[0] if row and row[1] else None


def _write_by_token_sql(message_set: str, fence_sql: str, worker_set: str, beat: bool) -> str:
    only_if_old = " AND (heartbeat_at IS NULL OR heartbeat_at < %s)" if beat else ""
    return (
        f"WITH {WITH_TOKEN_OWNER}, "  # noqa: S608 (names, never input)
        f"done AS (UPDATE {_table(Message)} SET {message_set} WHERE {fence_sql} RETURNING 1), "
        f"owner AS (UPDATE {_table(Worker)} SET {worker_set} WHERE id = (SELECT id FROM me) "
        f"AND EXISTS (SELECT 1 FROM done){only_if_old} RETURNING 1) "
        "SELECT me.worker_id, EXISTS (SELECT 1 FROM done) FROM me"
    )


def locked(model, pk: int):
    """``model.objects.select_for_update(no_key=True).get(pk=pk)``. SQLite has no row locks:
    its claims are serialised by IMMEDIATE transactions instead.

    NO KEY UPDATE, not UPDATE: it still excludes every other locker, but lets a transaction
    that inserts a row pointing here (an enqueue's message) pass its foreign-key check. A
    claim holding its conversation may wait for such an enqueue (on the queue marker its
    trigger updated); with FOR UPDATE that enqueue's commit would wait for the claim.
    """
    quote = connection.ops.quote_name
    lock = ""
    if connection.features.has_select_for_no_key_update:
        lock = " FOR NO KEY UPDATE"
    elif connection.features.has_select_for_update:
        lock = " FOR UPDATE"
    sql = f"SELECT * FROM {quote(model._meta.db_table)} WHERE id = %s{lock}"  # noqa: S608
    found = first_instance(model, sql, [pk])
    if found is None:
        raise model.DoesNotExist(f"No {model.__name__} with id {pk}.")
    return found


# Every enqueue asks this (bench/webhook_ingest.py).
_CONVERSATION_KEY_SQL = (
    f"SELECT id, agent_id FROM {Conversation._meta.db_table} "  # noqa: S608 (names, not input)
    "WHERE conversation_id = %s"
)


def conversation_key(conversation_id: str) -> tuple[int, int] | None:
    """(pk, agent pk) of an existing conversation, or None.

    Twin: ``Conversation.objects.filter(conversation_id=…).values_list("id", "agent_id")``.
    """
    with prepared_cursor() as cursor:
        cursor.execute(_CONVERSATION_KEY_SQL, [conversation_id])
        row = cursor.fetchone()
    return (row[0], row[1]) if row else None
