"""How the raw-SQL fast paths (``workers.sql``, ``workers.sql_claim``, ``sql_warm_claim``,
``telegram.sql``) run: on a server-bound cursor that PostgreSQL can prepare (or several sent
together, in one round trip), with their rows turned into model instances exactly as the
ORM turns a QuerySet's rows into them.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from weakref import WeakKeyDictionary

from django.db import DEFAULT_DB_ALIAS, connection, connections


def prepared_cursor():
    """A cursor for the hottest fixed-shape statements (claims, the webhook): on PostgreSQL its
    parameters are bound by the server, so a statement that runs on every request is
    parsed and planned once per connection (a prepared statement, after psycopg's
    ``prepare_threshold`` runs; the settings' ``DATABASE_PREPARE_THRESHOLD``) and its
    parameters are not spliced into the text in Python. Elsewhere, the usual cursor.

    Django's own cursors bind on the client, which never prepares; this one still goes
    through Django's wrapper (query logging, execute wrappers, error translation).
    """
    if connection.vendor != "postgresql":
        return connection.cursor()
    return nullcontext(_bound_cursors(1)[0])


def _bound_cursors(count: int) -> list:
    """``count`` server-binding cursors of the current connection, wrapped by Django."""
    from django.db.backends.postgresql.base import ServerBindingCursor

    connection.ensure_connection()
    raw = connection.connection
    cursors = _BOUND_CURSORS.setdefault(raw, [])
    while len(cursors) < count:
        cursors.append(ServerBindingCursor(raw))
    return [connection._prepare_cursor(cursor) for cursor in cursors[:count]]


# Server-binding cursors per pooled connection, reused by every statement on it (the first
# by each ``prepared_cursor``, as many as it sends by ``pipelined``): a new psycopg cursor
# builds its own adapters, which cost a warm claim more than its rows did. A connection is
# used by one thread at a time, and so are its cursors; the key is weak, so a connection the
# pool closes takes its cursors with it.
_BOUND_CURSORS: WeakKeyDictionary = WeakKeyDictionary()


def can_pipeline() -> bool:
    """Whether ``pipelined`` can send statements together here (PostgreSQL, psycopg's
    pipeline mode)."""
    if connection.vendor != "postgresql":
        return False
    import psycopg

    return psycopg.Pipeline.is_supported()


def pipelined(*statements: tuple[str, list]) -> list:
    """Run ``(sql, params)`` statements in order in one round trip (psycopg's pipeline mode),
    server-bound like ``prepared_cursor``'s; returns a cursor per statement, its rows ready
    to read (``row_instance``). Only where ``can_pipeline()``.

    PostgreSQL runs them one after the other, each with a snapshot of its own taken when it
    starts, so a statement sees what the statements before it locked and wrote. Outside a
    transaction they are one implicit transaction, committed at the end (one statement's
    error undoes them all); inside one, they are part of it.
    """
    wrapped = _bound_cursors(len(statements))
    # Errors surface when the pipeline ends, outside the cursors' own translation.
    with connection.wrap_database_errors, connection.connection.pipeline():
        for cursor, (sql, params) in zip(wrapped, statements, strict=True):
            cursor.execute(sql, params)
    return wrapped


def statement_text(build, *shape) -> str:
    """``build(*shape)``, built once per shape (and database vendor): a statement's text
    depends only on which columns it names, and on the queue's hot paths building it cost
    as much as the psycopg call."""
    return _built_text(connection.vendor, build, *shape)


@functools.cache
def _built_text(vendor: str, build, *shape) -> str:
    return build(*shape)


_CONVERTERS: dict[tuple, list] = {}


def _converters(model, fields) -> list:
    """Per field, its column and the converters the ORM would apply (computed once per
    field list). Keyed by attribute names: hashing ``Field`` objects on every row cost more
    than the conversion itself (bench/claim_throughput.py)."""
    key = (connection.vendor, model, *(field.attname for field in fields))
    plan = _CONVERTERS.get(key)
    if plan is None:
        plan = []
        for field in fields:
            col = field.get_col(model._meta.db_table)
            steps = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
            plan.append((col, steps))
        _CONVERTERS[key] = plan
    return plan


def _convert(plan, values, conn) -> list:
    converted = []
    for (col, steps), value in zip(plan, values, strict=True):
        for convert in steps:
            value = convert(value, col, conn)
        converted.append(value)
    return converted


def instance_from_row(model, fields, values):
    """A ``model`` instance from ``values`` of ``fields`` (in the model's field order) as the
    database sent them, through the converters the ORM applies (as ``Model.from_db`` gets
    them from a QuerySet)."""
    conn = connections[DEFAULT_DB_ALIAS]  # resolved once, not on every value
    converted = _convert(_converters(model, fields), values, conn)
    return model.from_db(conn.alias, [field.attname for field in fields], converted)


class _RowLayout:
    """How a statement's rows become ``model`` instances: which values are the model's
    fields (in the model's field order, as ``from_db`` takes them), their converters, and
    which are extra columns (an ``EXISTS … AS busy``, a joined row's ``c_id``)."""

    def __init__(self, model, names: list[str]):
        columns = {field.column: field for field in model._meta.concrete_fields}
        position_of, self.extras = {}, []
        for index, name in enumerate(names):
            field = columns.get(name)
            if field is None or field.column in position_of:
                self.extras.append((index, name))
            else:
                position_of[field.column] = index
        fields = [f for f in model._meta.concrete_fields if f.column in position_of]
        self.positions = [position_of[field.column] for field in fields]
        self.attnames = [field.attname for field in fields]
        self.converters = _converters(model, fields)


# A statement's text fixes its columns, so its layout is worked out on its first row only.
_LAYOUTS: dict[tuple, _RowLayout] = {}


def first_instance(model, sql: str, params):
    """``next(iter(model.objects.raw(sql, params)), None)``, run on ``prepared_cursor``:
    the first row as a ``model`` instance, its columns that are not the model's (an
    ``EXISTS … AS busy``, a joined row's ``c_id``) set as attributes. A statement that
    selects some of the model's columns gives an instance with the others deferred, as
    ``only()`` does."""
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        return row_instance(cursor, model, sql)


def row_instance(cursor, model, sql: str):
    """``first_instance``'s answer from a cursor that has run ``sql`` (``pipelined``)."""
    row = cursor.fetchone()
    key = (connection.vendor, model, sql)
    layout = _LAYOUTS.get(key)
    if layout is None:
        layout = _LAYOUTS[key] = _RowLayout(model, [c[0] for c in cursor.description])
    if row is None:
        return None
    conn = connections[DEFAULT_DB_ALIAS]
    values = _convert(layout.converters, [row[i] for i in layout.positions], conn)
    instance = model.from_db(conn.alias, layout.attnames, values)
    for index, name in layout.extras:
        setattr(instance, name, row[index])
    return instance
