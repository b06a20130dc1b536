"""django-q2 schedules (registered idempotently, no catch-up, nightly cleanup opt-in) and the
coalesced reconcile trigger after enqueue."""

from __future__ import annotations

import datetime as dt
import io
import json
from unittest import mock

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.utils.module_loading import import_string
from django_q.conf import Conf
from django_q.models import Schedule

from agents.models import RuntimeConfig
from config.schedules import all_schedules
from fly.schedules import NIGHTLY_CLEANUP as NIGHTLY_FLY_CLEANUP
from workers.scheduling import Scheduled, declared_schedules, register_schedules
from workers.triggers import TRIGGER_CACHE_KEY, request_reconcile

# Always on (the nightly Fly cleanup is opt-in).
SCHEDULES = [entry for entry in declared_schedules() if entry.enabled_if is None]


def schedule_set():
    return sorted(
        Schedule.objects.values_list("name", "func", "schedule_type", "minutes", "repeats")
    )


def test_register_twice_yields_the_same_set(runtime_config):
    first = register_schedules()
    rows = schedule_set()
    next_runs = dict(Schedule.objects.values_list("name", "next_run"))
    second = register_schedules()
    assert schedule_set() == rows and Schedule.objects.count() == len(SCHEDULES)
    assert dict(Schedule.objects.values_list("name", "next_run")) == next_runs
    assert first["created"] == len(SCHEDULES) and second == {
        "created": 0,
        "updated": 0,
        "unchanged": len(SCHEDULES),
        "removed": 0,
    }
    assert ("reconcile-workers", "workers.reconcile.run_reconcile_task", "I", 1, -1) in rows
    assert ("sweep-expired-leases", "workers.leases.sweep_expired_leases", "I", 1, -1) in rows
    names = {row[0] for row in rows}
    assert {"expire-snapshots", "expire-attachments", "prune-telegram-updates"} <= names
    assert NIGHTLY_FLY_CLEANUP[0] not in names  # opt-in, off by default


def test_catch_up_is_off():
    # django-q2 replays every missed slot unless this is off (one cluster-wide setting).
    assert Conf.CATCH_UP is False


def test_every_scheduled_function_exists():
    for entry in declared_schedules():
        assert callable(import_string(entry.func)), entry.func


def test_each_app_declares_its_own_schedules():
    """config/schedules.py only assembles: each schedule's function lives in the app whose
    schedules.py declares it (workers knows nothing of Fly's nightly cleanup)."""
    import agents.consumer_api.schedules
    import agents.pushing.schedules
    import agents.schedules
    import fly.schedules
    import telegram.schedules
    import workers.schedules

    by_app = {
        "workers": workers.schedules.SCHEDULES,
        "telegram": telegram.schedules.SCHEDULES,
        "fly": fly.schedules.SCHEDULES,
        # Plain tuples: agents may not import workers.scheduling.Scheduled.
        "agents.pushing": agents.pushing.schedules.SCHEDULES,
        "agents.consumer_api": agents.consumer_api.schedules.SCHEDULES,
        "agents": agents.schedules.SCHEDULES,
    }
    for app, entries in by_app.items():
        entries = [Scheduled(*entry) for entry in entries]
        assert entries and all(entry.func.startswith(f"{app}.") for entry in entries), app
    declared_by_apps = [Scheduled(*entry) for entry in sum(by_app.values(), [])]
    assert sorted(declared_schedules()) == sorted(declared_by_apps)


def extra_app_schedules():
    return [*all_schedules(), ("another-app-job", "tests.workers.another_job", "I", 5)]


def test_a_new_app_adds_a_schedule_by_declaring_it(runtime_config, settings):
    settings.AGENT_FACTORY_SCHEDULES = f"{__name__}.extra_app_schedules"
    register_schedules()
    row = Schedule.objects.get(name="another-app-job")
    assert (row.func, row.schedule_type, row.minutes) == ("tests.workers.another_job", "I", 5)


def twice_declared():
    return [*all_schedules(), Scheduled("reconcile-workers", "elsewhere.reconcile", "I", 2)]


def test_two_apps_cannot_declare_one_name(runtime_config, settings):
    settings.AGENT_FACTORY_SCHEDULES = f"{__name__}.twice_declared"
    with pytest.raises(ValueError, match="reconcile-workers"):
        declared_schedules()


def test_duplicate_rows_are_collapsed_and_changes_applied(runtime_config):
    Schedule.objects.create(name="reconcile-workers", func="old.path", schedule_type="I", minutes=5)
    Schedule.objects.create(name="reconcile-workers", func="old.path", schedule_type="I", minutes=5)
    result = register_schedules()
    row = Schedule.objects.get(name="reconcile-workers")
    assert (row.func, row.minutes) == ("workers.reconcile.run_reconcile_task", 1)
    assert result["updated"] == 1


def test_nightly_cleanup_only_when_enabled_and_first_at_0300(runtime_config):
    now = dt.datetime(2026, 12, 1, 18, 0, tzinfo=dt.UTC)
    RuntimeConfig.objects.filter(pk=1).update(fly_cleanup_nightly=True)
    register_schedules(now=now)
    nightly = Schedule.objects.get(name=NIGHTLY_FLY_CLEANUP[0])
    assert nightly.func == "fly.cleanup.run_scheduled_cleanup"
    assert nightly.schedule_type == Schedule.DAILY and nightly.repeats == -1
    # Never "now": switching the setting on must not destroy the app on the spot.
    assert nightly.next_run == dt.datetime(2026, 12, 2, 3, 0, tzinfo=dt.UTC)
    assert nightly.calculate_next_run() == dt.datetime(2026, 12, 3, 3, 0, tzinfo=dt.UTC)
    register_schedules(now=now + dt.timedelta(hours=1))  # idempotent: keeps its slot
    assert Schedule.objects.get(name=NIGHTLY_FLY_CLEANUP[0]).next_run == nightly.next_run
    RuntimeConfig.objects.filter(pk=1).update(fly_cleanup_nightly=False)
    assert register_schedules()["removed"] == 1
    assert not Schedule.objects.filter(name=NIGHTLY_FLY_CLEANUP[0]).exists()


def test_saving_the_setting_registers_the_nightly_schedule(
    runtime_config, django_capture_on_commit_callbacks
):
    from agents.services import configure_runtime

    with django_capture_on_commit_callbacks(execute=True):
        configure_runtime(actor="t", fly_cleanup_nightly=True)
    assert Schedule.objects.filter(name=NIGHTLY_FLY_CLEANUP[0]).exists()
    with django_capture_on_commit_callbacks(execute=True):
        configure_runtime(actor="t", fly_cleanup_nightly=False)
    assert not Schedule.objects.filter(name=NIGHTLY_FLY_CLEANUP[0]).exists()


def test_register_schedules_command_json(runtime_config):
    out = io.StringIO()
    call_command("register_schedules", "--json", stdout=out)
    assert json.loads(out.getvalue())["created"] == len(SCHEDULES)


# The trigger ---------------------------------------------------------------------------


@pytest.fixture
def broker(settings):
    cache.delete(TRIGGER_CACHE_KEY)
    with (
        mock.patch.object(Conf, "SYNC", False),
        mock.patch("django_q.tasks.async_task") as async_task,
    ):
        yield async_task
    cache.delete(TRIGGER_CACHE_KEY)


def test_a_burst_of_enqueues_queues_one_reconcile(broker):
    for _ in range(5):
        request_reconcile()
    assert broker.call_count == 1
    args, kwargs = broker.call_args
    assert args[0] == "workers.reconcile.run_reconcile_task"
    assert isinstance(args[1], float) and kwargs["task_name"] == "reconcile-trigger"


def test_a_new_window_queues_again(broker):
    request_reconcile()
    cache.delete(TRIGGER_CACHE_KEY)  # the window closed
    request_reconcile()
    assert broker.call_count == 2


def test_broker_failure_never_fails_the_enqueue(broker, caplog):
    broker.side_effect = RuntimeError("broker down")
    request_reconcile()  # no exception
    assert "Could not queue a reconcile trigger" in caplog.text
    broker.side_effect = None
    request_reconcile()  # the flag was cleared: the next enqueue tries again
    assert broker.call_count == 2


def test_enqueue_calls_the_trigger_once_per_commit(
    alpha_agent, enqueue, django_capture_on_commit_callbacks
):
    with mock.patch("workers.triggers.request_reconcile") as trigger:
        with django_capture_on_commit_callbacks(execute=True):
            enqueue("c1", "alpha")
        with django_capture_on_commit_callbacks(execute=True):
            enqueue("c2", "alpha")
    assert trigger.call_count == 2


def test_triggered_task_runs_a_trailing_pass_when_work_arrived(alpha_agent, enqueue):
    import time

    from workers.reconcile import ReconcileReport, run_reconcile_task

    opened = time.time()
    enqueue("c1", "alpha")
    passes = []
    with (
        mock.patch.object(Conf, "SYNC", False),
        mock.patch("workers.reconcile.time.sleep") as sleep,
        mock.patch(
            "workers.reconcile.reconcile",
            side_effect=lambda **kw: passes.append(kw) or ReconcileReport(),
        ),
    ):
        run_reconcile_task(opened)
    # First pass now (waiting for a running one if need be), then one after the window.
    assert len(passes) == 2 and all(p["wait_seconds"] > 0 for p in passes)
    assert sleep.call_count == 1 and 0 < sleep.call_args[0][0] <= 2.0


def test_triggered_task_skips_the_trailing_pass_when_nothing_arrived(db):
    import time

    from workers.reconcile import ReconcileReport, run_reconcile_task

    with (
        mock.patch.object(Conf, "SYNC", False),
        mock.patch("workers.reconcile.time.sleep"),
        mock.patch("workers.reconcile.reconcile", return_value=ReconcileReport()) as passes,
    ):
        run_reconcile_task(time.time())
        assert passes.call_count == 1
        run_reconcile_task()  # the schedule: one pass, no waiting
        assert passes.call_count == 2 and passes.call_args.kwargs.get("wait_seconds") is None
