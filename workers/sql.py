"""The queue's raw-SQL fast paths, all in one room (ARCHITECTURE.md).

Claim, heartbeat, complete and enqueue run a handful of fixed-shape statements per request,
and the ORM spends longer compiling each one than the database spends running it
(bench/claim_throughput.py, bench/webhook_ingest.py). Each function here has a QuerySet twin
that says the same thing in the ORM; tests/workers/test_sql_twins.py runs both on SQLite and
PostgreSQL with the same data and asserts the same answer. Values are prepared by the
models' own fields, so both backends see exactly what the ORM would send; table and column
names come from the models, never from input. The claim's own statements are next door, in
``workers/sql_claim.py``; how they all run is ``workers/sql_cursor.py``.
"""

from __future__ import annotations

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
    params = [meta.get_field(name).get_db_prep_save(v, connection) for name, v in values.items()]
    return _text(_assignments_sql, model, tuple(values)), params


def _assignments_sql(model, names: tuple[str, ...]) -> str:
    quote, meta = connection.ops.quote_name, model._meta
    return ", ".join(f"{quote(meta.get_field(name).column)} = %s" for name in names)


def _conditions(model, where) -> tuple[str, list]:
    meta, params = model._meta, []
    for name, operator, value in where:
        field = meta.pk if name == "pk" else meta.get_field(name)
        assert operator in OPERATORS and value is not None
        params.append(field.get_db_prep_value(value, connection))
    shape = tuple((name, operator) for name, operator, _ in where)
    return _text(_conditions_sql, model, shape), params


def _conditions_sql(model, shape: tuple[tuple[str, str], ...]) -> str:
    quote, meta = connection.ops.quote_name, model._meta
    return " AND ".join(
        f"{quote((meta.pk if name == 'pk' else meta.get_field(name)).column)} {operator} %s"
        for name, operator in shape
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
