"""How the raw-SQL fast paths (``workers.sql``, ``telegram.sql``) run: on a server-bound
cursor that PostgreSQL can prepare, with their rows turned into model instances exactly as
the ORM turns a QuerySet's rows into them.
"""

from __future__ import annotations

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
    from django.db.backends.postgresql.base import ServerBindingCursor

    connection.ensure_connection()
    return connection._prepare_cursor(ServerBindingCursor(connection.connection))


_CONVERTERS: dict[tuple, list] = {}


def _converters(model, fields: tuple) -> list:
    """Per field, its column and the converters the ORM would apply (computed once)."""
    key = (connection.vendor, model, fields)
    if key not in _CONVERTERS:
        plan = []
        for field in fields:
            col = field.get_col(model._meta.db_table)
            steps = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
            plan.append((col, steps))
        _CONVERTERS[key] = plan
    return _CONVERTERS[key]


def instance_from_row(model, fields, values):
    """A ``model`` instance from ``values`` of ``fields`` (in the model's field order) as the
    database sent them, through the converters the ORM applies (as ``Model.from_db`` gets
    them from a QuerySet)."""
    fields = tuple(fields)
    conn = connections[DEFAULT_DB_ALIAS]  # resolved once, not on every value
    converted = []
    for (col, steps), value in zip(_converters(model, fields), values, strict=True):
        for convert in steps:
            value = convert(value, col, conn)
        converted.append(value)
    return model.from_db(conn.alias, [f.attname for f in fields], converted)


_COLUMNS: dict[type, dict] = {}


def first_instance(model, sql: str, params):
    """``next(iter(model.objects.raw(sql, params)), None)``, run on ``prepared_cursor``:
    the first row as a ``model`` instance, its columns that are not the model's (an
    ``EXISTS … AS busy``, a joined row's ``c_id``) set as attributes."""
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
        names = [column[0] for column in cursor.description]
    if row is None:
        return None
    if model not in _COLUMNS:
        _COLUMNS[model] = {f.column: f for f in model._meta.concrete_fields}
    columns = _COLUMNS[model]
    found, extras = {}, []
    for name, value in zip(names, row, strict=True):
        field = columns.get(name)
        if field is None or field in found:
            extras.append((name, value))
        else:
            found[field] = value
    # ``from_db`` takes the values in the model's field order.
    fields = [f for f in model._meta.concrete_fields if f in found]
    instance = instance_from_row(model, fields, [found[f] for f in fields])
    for name, value in extras:
        setattr(instance, name, value)
    return instance
