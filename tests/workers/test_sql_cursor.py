"""The plumbing of the raw-SQL fast paths (workers.sql_cursor)."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection

from workers.models import Worker
from workers.sql_cursor import first_instance, pipelined, statement_text


def test_a_statement_text_is_built_once_per_shape():
    built = []

    def build(table: str, columns: tuple) -> str:
        built.append((table, columns))
        return f"SELECT {', '.join(columns)} FROM {table}"  # noqa: S608 (test names)

    first = statement_text(build, "t", ("a", "b"))
    again = statement_text(build, "t", ("a", "b"))
    other = statement_text(build, "t", ("a",))
    assert first == again == "SELECT a, b FROM t" and other == "SELECT a FROM t"
    assert again is first
    assert built == [("t", ("a", "b")), ("t", ("a",))]


def test_a_row_of_some_columns_gives_an_instance_with_the_rest_deferred(db):
    worker = Worker.objects.create(worker_id="w-partial", status=Worker.ACTIVE)
    sql = 'SELECT id, worker_id, 1 AS "extra" FROM workers_worker WHERE id = %s'
    for _ in range(2):  # the second row goes through the layout kept from the first
        found = first_instance(Worker, sql, [worker.pk])
        assert (found.pk, found.worker_id, found.extra) == (worker.pk, "w-partial", 1)
        assert "status" in found.get_deferred_fields()
        assert "worker_id" not in found.get_deferred_fields()
    assert found.status == Worker.ACTIVE  # a deferred field still loads when touched
    assert first_instance(Worker, sql, [worker.pk + 1000]) is None


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_pipelined_statements_run_in_order_in_one_transaction():
    """Each statement sees what the ones before it wrote; each cursor holds its own rows;
    outside a transaction they commit together, and an error undoes them all."""
    worker = Worker.objects.create(worker_id="w-pipe", status=Worker.ACTIVE)
    write = ("UPDATE workers_worker SET load = %s WHERE id = %s RETURNING load", [7, worker.pk])
    read = ("SELECT load, worker_id FROM workers_worker WHERE id = %s", [worker.pk])
    wrote, seen = pipelined(write, read)
    assert wrote.fetchone() == (7,) and seen.fetchone() == (7, "w-pipe")
    assert connection.connection.pgconn.transaction_status == 0  # committed, idle
    assert Worker.objects.get(pk=worker.pk).load == 7
    failing = ("SELECT 1 / 0", [])
    with pytest.raises(DatabaseError):
        pipelined(("UPDATE workers_worker SET load = %s WHERE id = %s", [9, worker.pk]), failing)
    assert Worker.objects.get(pk=worker.pk).load == 7
    assert [c.fetchone() for c in pipelined(read)] == [(7, "w-pipe")]
