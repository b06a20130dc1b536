"""Two reconciles at once, forced to overlap at the worst moment (real connections, threads).

On PostgreSQL this is the advisory lock between two sessions; on SQLite the file lock.
Without the single-reconcile lock both tests fail: the second pass plans a second worker
for the same demand while the first has not committed, or tears down the same worker twice.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from agents.models import RuntimeConfig
from tests.workers.test_reconcile import (  # noqa: F401
    RecordingProvider,
    fake_provider,
    queue_demand_for_racing_passes,
)
from workers import reconcile as reconcile_module
from workers.models import Worker
from workers.reconcile import reconcile

pytestmark = pytest.mark.django_db(transaction=True)


def run_in_thread(target, result: dict, key: str) -> threading.Thread:
    def body():
        try:
            result[key] = target()
        except BaseException as exc:  # surfaced by the assertions below
            result[key] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=body)
    thread.start()
    return thread


def second_pass_while_the_first_holds(first_holds, second_done) -> dict:
    """Reconcile "a" in one thread; once it signals ``first_holds``, reconcile "b" in another
    and let it finish, then ``second_done`` releases "a". Returns both reports (or errors)."""
    results: dict = {}
    a = run_in_thread(reconcile, results, "a")
    assert first_holds.wait(10)
    b = run_in_thread(reconcile, results, "b")
    b.join(20)
    second_done.set()
    a.join(20)
    return results


def test_second_reconcile_during_planning_does_not_double_spawn(fake_provider, monkeypatch):  # noqa: F811
    queue_demand_for_racing_passes(monkeypatch)
    planned, second_done = threading.Event(), threading.Event()
    original = reconcile_module._plan_spawns
    first = {"taken": False}

    def plan_then_hold(*args, **kwargs):
        result = original(*args, **kwargs)
        if not first["taken"]:
            first["taken"] = True
            planned.set()
            # Hold the first pass inside its transaction (row written, not committed)
            # until the second pass has had its go.
            second_done.wait(10)
        return result

    monkeypatch.setattr(reconcile_module, "_plan_spawns", plan_then_hold)
    results = second_pass_while_the_first_holds(planned, second_done)
    assert not isinstance(results["a"], BaseException), results["a"]
    assert not isinstance(results["b"], BaseException), results["b"]
    assert results["b"].skipped == "another reconcile is running"
    assert len(results["a"].spawned) == 1
    assert Worker.objects.count() == 1 and len(fake_provider.spawned) == 1


def test_second_reconcile_during_teardown_does_not_tear_down_twice(fake_provider, monkeypatch):  # noqa: F811
    RuntimeConfig.get()
    Worker.objects.create(worker_id="w1", provider="fake", machine_id="m1", status="stopping")
    in_teardown, second_done = threading.Event(), threading.Event()
    calls = []

    def slow_teardown(self, worker, *, force=False):
        calls.append(worker.worker_id)
        in_teardown.set()
        second_done.wait(10)  # a slow Fly call

    monkeypatch.setattr(RecordingProvider, "teardown", slow_teardown)
    results = second_pass_while_the_first_holds(in_teardown, second_done)
    assert results["b"].skipped == "another reconcile is running"
    assert results["a"].stopped == ["w1"]
    assert calls == ["w1"]
    assert Worker.objects.get().status == "stopped"
