"""The reconcile trace (AGENT_FACTORY_RECONCILE_TRACE_FILE): every pass that ran leaves a
begin and an end line, and passes that ran at once show as overlapping — the instrument the
scale-out proof uses to show that no two reconciles ever overlap across processes."""

from __future__ import annotations

import contextlib
import os
import threading
import time

import pytest
from django.db import connection

from tests.e2e.scale_checks import parse_trace, reconcile_overlaps
from workers import reconcile as reconcile_module
from workers.reconcile import reconcile, reconcile_lock


@pytest.fixture
def trace(settings, tmp_path):
    path = tmp_path / "trace.log"
    settings.AGENT_FACTORY_RECONCILE_TRACE_FILE = str(path)
    return path


def traced_passes(path):
    return parse_trace(path.read_text().splitlines()) if path.exists() else []


def test_a_pass_leaves_its_begin_and_end(trace, runtime_config):
    reconcile()
    reconcile()
    first, second = traced_passes(trace)
    assert first.pid == second.pid == os.getpid()
    assert first.begin < first.end < second.begin < second.end
    assert first.pass_id != second.pass_id


def test_no_trace_unless_asked(settings, tmp_path, runtime_config):
    settings.AGENT_FACTORY_RECONCILE_TRACE_FILE = ""
    reconcile()
    assert list(tmp_path.iterdir()) == []


def in_thread(func, **kwargs):
    """Run ``func`` in a thread of its own (its own database connection, as another process
    would have), closing that connection afterwards."""

    def run():
        try:
            func(**kwargs)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_pass_that_did_not_get_the_lock_leaves_nothing(trace, transactional_db):
    taken, release = threading.Event(), threading.Event()

    def hold():
        with reconcile_lock() as held:
            assert held
            taken.set()
            release.wait(10)

    holder = in_thread(hold)
    assert taken.wait(10)
    try:
        assert reconcile().skipped
    finally:
        release.set()
        holder.join()
    assert traced_passes(trace) == []


def slow_passes(monkeypatch):
    """Passes that take a while and touch nothing, so two threads can race for the lock."""
    monkeypatch.setattr(reconcile_module, "_reconcile_locked", lambda *a: time.sleep(0.3))


def run_two_at_once():
    threads = [in_thread(reconcile, wait_seconds=5) for _ in range(2)]
    for thread in threads:
        thread.join()


def test_with_the_lock_two_racing_passes_run_one_after_the_other(
    trace, monkeypatch, transactional_db
):
    slow_passes(monkeypatch)
    run_two_at_once()
    passes = traced_passes(trace)
    assert len(passes) == 2 and reconcile_overlaps(passes) == []


def test_without_the_lock_the_trace_shows_the_overlap(trace, monkeypatch):
    slow_passes(monkeypatch)

    @contextlib.contextmanager
    def no_lock(wait_seconds=0.0):
        yield True

    monkeypatch.setattr(reconcile_module, "reconcile_lock", no_lock)
    run_two_at_once()
    passes = traced_passes(trace)
    assert len(passes) == 2 and len(reconcile_overlaps(passes)) == 1
