"""Autoscaling reconcile and the worker lifecycle (SPEC §10), with a recording provider."""

from __future__ import annotations

import datetime as dt
import io
import json
import threading

import pytest
import time_machine
from django.core.management import call_command
from django.db import connections
from django.utils import timezone

from agents.models import AgentProfile, AuditEvent, RuntimeConfig
from tests.race import run_at_once
from workers.lifecycle import InvalidTransition, transition_worker
from workers.models import DataSnapshot, Message, Worker
from workers.providers.base import Provider, ProviderError, SpawnResult
from workers.reconcile import reconcile
from workers.tokens import authenticate


class RecordingProvider(Provider):
    name = "fake"
    spawned: list = []
    torn_down: list = []
    gone: set = set()
    fail_spawn = False
    fail_teardown = False

    def spawn(self, request):
        if RecordingProvider.fail_spawn:
            raise ProviderError("no capacity")
        RecordingProvider.spawned.append(request)
        return SpawnResult(machine_id=f"m-{request.worker_id}", region="ams")

    def is_gone(self, worker):
        return worker.worker_id in RecordingProvider.gone

    def teardown(self, worker, *, force=False):
        if RecordingProvider.fail_teardown:
            raise ProviderError("api down")
        RecordingProvider.torn_down.append((worker.worker_id, force))


@pytest.fixture
def fake_provider(settings, runtime_config):
    settings.AGENT_FACTORY_PROVIDERS = {
        **settings.AGENT_FACTORY_PROVIDERS,
        "fake": "tests.workers.test_reconcile.RecordingProvider",
    }
    RecordingProvider.spawned = []
    RecordingProvider.torn_down = []
    RecordingProvider.gone = set()
    RecordingProvider.fail_spawn = False
    RecordingProvider.fail_teardown = False
    RuntimeConfig.objects.filter(pk=1).update(provider_kind="fake")
    return RecordingProvider


def spawned_conversations(provider):
    return sorted(r.conversation_id for r in provider.spawned)


def test_demand_counts_conversations_not_messages(fake_provider, alpha_agent, enqueue):
    for n in range(10):
        enqueue("conv-1", "alpha", f"m{n}")
    RuntimeConfig.objects.filter(pk=1).update(spawn_step=4)
    report = reconcile()
    assert report.spawned and len(report.spawned) == 1
    assert spawned_conversations(fake_provider) == ["conv-1"]
    worker = Worker.objects.get()
    assert worker.assigned_conversation.conversation_id == "conv-1"
    assert worker.machine_id == f"m-{worker.worker_id}" and worker.machine_region == "ams"
    assert authenticate(fake_provider.spawned[0].token) == worker
    assert reconcile().spawned == []  # covered now


def test_spawn_limited_by_step_and_max_workers(fake_provider, alpha_agent, enqueue):
    for n in range(6):
        enqueue(f"conv-{n}", "alpha")
    RuntimeConfig.objects.filter(pk=1).update(spawn_step=2, max_workers=3)
    assert len(reconcile().spawned) == 2
    assert len(reconcile().spawned) == 1  # max_workers reached
    assert len(reconcile().spawned) == 0
    assert Worker.objects.count() == 3


def test_spawn_failure_records_error_and_stops_row(fake_provider, alpha_agent, enqueue):
    enqueue("conv-1", "alpha")
    fake_provider.fail_spawn = True
    report = reconcile()
    assert report.spawn_failed and "no capacity" in report.errors[0]
    worker = Worker.objects.get()
    assert worker.status == "stopped" and worker.last_error == "no capacity"
    assert worker.token_hash == "" and worker.token_revoked_at is not None
    fake_provider.fail_spawn = False
    # Demand is still there: retried once the short backoff has passed.
    blocked = reconcile()
    assert blocked.spawned == [] and "after 1 failed spawn(s); last error: no capacity" in (
        blocked.blocked or ""
    )
    with time_machine.travel(timezone.now() + dt.timedelta(seconds=31), tick=False):
        assert len(reconcile().spawned) == 1


def test_spawn_needing_an_undecryptable_secret_fails_with_its_reason(
    fake_provider, alpha_agent, enqueue, monkeypatch, caplog
):
    """SPEC §23: a secret the key ring cannot decrypt (a Fly token, a bridge key) is a clear
    spawn failure, not an "unexpected error" traceback."""
    from agents.secret_store import SecretUnavailable

    def spawn(self, request):
        raise SecretUnavailable("Secret 'fly.apiToken' v1 is encrypted with key 'deadbeef'")

    monkeypatch.setattr(RecordingProvider, "spawn", spawn)
    enqueue("conv-1", "alpha")
    report = reconcile()
    assert report.spawn_failed and "'fly.apiToken' v1" in report.errors[0]
    assert "unexpected error" not in report.errors[0]
    assert Worker.objects.get().status in ("stopping", "stopped")
    assert not [r for r in caplog.records if r.exc_info]


def test_repeated_spawn_failures_back_off_exponentially(fake_provider, alpha_agent, enqueue):
    enqueue("conv-1", "alpha")
    fake_provider.fail_spawn = True
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        assert len(reconcile().spawn_failed) == 1
    with time_machine.travel(start + dt.timedelta(seconds=31), tick=False):
        assert len(reconcile().spawn_failed) == 1  # second failure: now 60 s
    with time_machine.travel(start + dt.timedelta(seconds=31 + 59), tick=False):
        assert reconcile().blocked.startswith("spawning paused")
        assert Worker.objects.count() == 2  # no new row while paused
    with time_machine.travel(start + dt.timedelta(seconds=31 + 61), tick=False):
        assert len(reconcile().spawn_failed) == 1


def test_misconfigured_provider_blocks_spawning_without_rows(runtime_config, alpha_agent, enqueue):
    from agents.models import RuntimeConfig as Config

    Config.objects.filter(pk=1).update(provider_kind="fly", app_name="", image="")
    enqueue("conv-1", "alpha")
    report = reconcile()
    assert report.spawned == [] and report.demand == 1
    assert "provider 'fly' is not usable: The Fly provider needs an app name" in report.blocked
    assert not Worker.objects.exists()
    assert not AuditEvent.objects.filter(action="workers.reconcile").exists()  # no churn


def test_stale_worker_is_drained_then_stopped(fake_provider, runtime_config):
    now = timezone.now()
    worker = Worker.objects.create(
        worker_id="w1",
        provider="fake",
        machine_id="m1",
        heartbeat_at=now - dt.timedelta(seconds=421),
    )
    report = reconcile()
    worker.refresh_from_db()
    # Never claimed: nothing to snapshot, so it goes straight on to teardown.
    assert report.drained == ["w1"] and worker.status == "stopped"
    assert fake_provider.torn_down == [("w1", False)]
    assert worker.status_reason == "never claimed: nothing to snapshot"


def test_heartbeat_exactly_at_cutoff_is_still_live(fake_provider, runtime_config):
    with time_machine.travel(timezone.now(), tick=False):
        now = timezone.now()
        Worker.objects.create(
            worker_id="w1",
            provider="fake",
            machine_id="m1",
            heartbeat_at=now - dt.timedelta(seconds=420),
        )
        assert reconcile().drained == []


def test_idle_worker_drained_after_deadline_not_before(fake_provider, runtime_config):
    now = timezone.now()
    worker = Worker.objects.create(
        worker_id="w1",
        provider="fake",
        machine_id="m1",
        heartbeat_at=now,
        scheduled_shutdown_at=now + dt.timedelta(minutes=30),
        last_claim_at=now,
    )
    assert reconcile().drained == []
    with time_machine.travel(now + dt.timedelta(minutes=30), tick=False):
        Worker.objects.filter(pk=worker.pk).update(heartbeat_at=timezone.now())
        assert reconcile().drained == ["w1"]
    worker.refresh_from_db()
    assert worker.status == "draining"  # it claimed before: waits for its final snapshot


def test_draining_worker_waits_for_snapshot_then_times_out(fake_provider, runtime_config):
    now = timezone.now()
    worker = Worker.objects.create(
        worker_id="w1", provider="fake", machine_id="m1", heartbeat_at=now, last_claim_at=now
    )
    transition_worker(worker, "draining", reason="idle timeout", now=now)
    with time_machine.travel(now + dt.timedelta(seconds=599), tick=False):
        reconcile()
        assert Worker.objects.get(pk=worker.pk).status == "draining"
    with time_machine.travel(now + dt.timedelta(seconds=601), tick=False):
        reconcile()
    worker.refresh_from_db()
    assert worker.status == "stopped" and worker.status_reason == "final snapshot timed out"


def test_final_snapshot_lets_draining_worker_proceed(fake_provider, runtime_config):
    now = timezone.now()
    worker = Worker.objects.create(
        worker_id="w1", provider="fake", machine_id="m1", heartbeat_at=now, last_claim_at=now
    )
    transition_worker(worker, "draining", reason="idle timeout")
    DataSnapshot.objects.create(
        agent_key="a", worker_id="w1", conversation_id="c", reason="drain", status="ready"
    )
    reconcile()
    assert Worker.objects.get(pk=worker.pk).status == "stopped"


def test_machine_gone_skips_snapshot_wait_but_still_tears_down(fake_provider, runtime_config):
    """No final-snapshot wait for a gone machine, but teardown still runs: a dead or
    destroyed machine can leave a volume that keeps billing."""
    now = timezone.now()
    Worker.objects.create(
        worker_id="w1", provider="fake", machine_id="m1", heartbeat_at=now, last_claim_at=now
    )
    fake_provider.gone = {"w1"}
    report = reconcile()
    assert report.drained == ["w1"] and report.stopping == ["w1"] and report.stopped == ["w1"]
    worker = Worker.objects.get()
    assert worker.status == "stopped" and worker.status_reason == "machine gone"
    assert fake_provider.torn_down == [("w1", False)]


def test_gone_worker_lease_is_recovered_at_once(fake_provider, alpha_agent, enqueue):
    from workers.leases import claim_next_job

    message = enqueue("conv-1", "alpha")
    worker = Worker.objects.create(
        worker_id="w1", provider="fake", machine_id="m1", heartbeat_at=timezone.now()
    )
    job = claim_next_job(worker)
    assert job.message.pk == message.pk
    fake_provider.gone = {"w1"}
    RuntimeConfig.objects.filter(pk=1).update(max_workers=1)  # no replacement spawn here
    report = reconcile()
    message.refresh_from_db()
    # The lease had minutes left, but its holder is gone: requeued now, an attempt counted.
    assert report.swept["requeued"] == 1
    assert message.status == "queued" and message.attempts == 1 and message.claimed_by == ""
    assert Worker.objects.get(pk=worker.pk).status == "stopped"


def test_teardown_failure_is_retried_with_force(fake_provider, runtime_config):
    Worker.objects.create(worker_id="w1", provider="fake", machine_id="m1", status="stopping")
    fake_provider.fail_teardown = True
    report = reconcile()
    assert report.teardown_failed == ["w1"]
    assert Worker.objects.get().status == "stopping"
    fake_provider.fail_teardown = False
    reconcile()
    assert fake_provider.torn_down == [("w1", True)]
    assert Worker.objects.get().status == "stopped"


def test_lifecycle_never_goes_back(db):
    worker = Worker.objects.create(worker_id="w1", status="stopped")
    with pytest.raises(InvalidTransition, match="cannot transition from 'stopped' to 'active'"):
        transition_worker(worker, "active", reason="x")


def test_query_count_is_constant_in_queue_size(
    fake_provider, alpha_agent, django_assert_max_num_queries
):
    from agents.models import Conversation

    def seed(n, offset):
        conversations = Conversation.objects.bulk_create(
            Conversation(conversation_id=f"c{offset + i}", agent=alpha_agent) for i in range(n)
        )
        Message.objects.bulk_create(
            Message(conversation=c, agent_key="alpha", payload={}) for c in conversations
        )

    RuntimeConfig.objects.filter(pk=1).update(max_workers=0)  # decision only, no spawns
    seed(10, 0)
    with django_assert_max_num_queries(40) as small:
        reconcile()
    seed(1000, 100)
    with django_assert_max_num_queries(40) as large:
        reconcile()
    assert len(large.captured_queries) == len(small.captured_queries)


def test_reconcile_command_json_and_audit(fake_provider, alpha_agent, enqueue):
    enqueue("conv-1", "alpha")
    out = io.StringIO()
    call_command("reconcile_workers", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert len(data["spawned"]) == 1 and data["demand"] == 1
    assert AuditEvent.objects.filter(action="workers.reconcile").exists()


def queue_demand_for_racing_passes(monkeypatch) -> None:
    """One queued conversation (c1, agent alpha) and room for four workers, committed.

    Tests run django-q2 inline: the enqueue trigger is switched off, or it would spawn first
    and the reconciles under test would have nothing left to race for.
    """
    from workers.queue import enqueue_message

    monkeypatch.setattr("workers.triggers.request_reconcile", lambda: None)
    AgentProfile.objects.create(agent_key="alpha")
    enqueue_message(
        conversation_id="c1",
        agent_key="alpha",
        payload={"provider": "t", "provider_user_id": "u", "message_text": "x"},
    )
    RuntimeConfig.objects.filter(pk=1).update(spawn_step=4, max_workers=4)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_reconciles_spawn_once(fake_provider, monkeypatch):
    queue_demand_for_racing_passes(monkeypatch)
    assert not Worker.objects.exists()

    def run():
        for _ in range(3):
            reconcile()

    run_at_once(run, [()] * 2, join_timeout=60)
    assert Worker.objects.count() == 1
    assert len(fake_provider.spawned) == 1


def test_token_is_revoked_when_the_worker_stops(fake_provider, make_worker):
    worker, token = make_worker("w1", provider="fake", machine_id="m1", status="stopping")
    assert authenticate(token) == worker
    assert reconcile().stopped == ["w1"]
    worker.refresh_from_db()
    assert authenticate(token) is None
    assert worker.token_hash == "" and worker.token_revoked_at is not None
    assert worker.assigned_conversation is None and worker.stopped_at is not None


def test_spawn_is_idempotent_per_worker_id(fake_provider, alpha_agent, enqueue):
    from workers.reconcile import ReconcileReport, _plan_spawns, _spawn

    enqueue("conv-1", "alpha")
    config = RuntimeConfig.get()
    [(worker, token)] = _plan_spawns(config, fake_provider(), timezone.now(), ReconcileReport())
    first, again = ReconcileReport(), ReconcileReport()
    _spawn(fake_provider(), worker, token, first)
    _spawn(fake_provider(), worker, token, again)  # a retry, or a second reconcile
    assert first.spawned == [worker.worker_id] and again.spawned == []
    assert len(fake_provider.spawned) == 1
    assert Worker.objects.get().status_reason == "spawned"


def test_a_drained_pending_spawn_is_never_spawned(fake_provider, alpha_agent, enqueue):
    from workers.reconcile import ReconcileReport, _plan_spawns, _spawn

    enqueue("conv-1", "alpha")
    [(worker, token)] = _plan_spawns(
        RuntimeConfig.get(), fake_provider(), timezone.now(), ReconcileReport()
    )
    transition_worker(worker, "draining", reason="drained by admin")
    _spawn(fake_provider(), worker, token, ReconcileReport())
    assert fake_provider.spawned == []


def test_stopping_worker_is_torn_down_by_its_own_provider(fake_provider, settings):
    """Switching the configured provider must not strand the old provider's workers."""
    RuntimeConfig.objects.filter(pk=1).update(provider_kind="none")
    Worker.objects.create(worker_id="w1", provider="fake", machine_id="m1", status="stopping")
    assert reconcile().stopped == ["w1"]
    assert fake_provider.torn_down == [("w1", False)]


def test_reconcile_command_prints_what_it_did(fake_provider, alpha_agent, enqueue):
    enqueue("conv-1", "alpha")
    Worker.objects.create(worker_id="old", provider="fake", machine_id="m0", status="stopping")
    out, err = io.StringIO(), io.StringIO()
    call_command("reconcile_workers", stdout=out, stderr=err)
    lines = out.getvalue().splitlines()
    assert lines[0] == "Swept 0 expired lease(s) (0 dead-lettered); demand 1, running 1."
    spawned = Worker.objects.exclude(worker_id="old").get().worker_id
    assert f"Spawned: {spawned}" in lines and "Stopped: old" in lines
    assert err.getvalue() == ""


def test_reconcile_command_reports_failures_on_stderr(fake_provider, alpha_agent, enqueue):
    enqueue("conv-1", "alpha")
    fake_provider.fail_spawn = True
    out, err = io.StringIO(), io.StringIO()
    call_command("reconcile_workers", stdout=out, stderr=err)
    worker_id = Worker.objects.get().worker_id
    assert f"Spawn failed: {worker_id}" in out.getvalue()
    assert f"spawn {worker_id}: no capacity" in err.getvalue()


def test_reconcile_skips_while_another_holds_the_lock(fake_provider, alpha_agent, enqueue):
    from workers.reconcile import reconcile_lock

    enqueue("conv-1", "alpha")
    result = {}

    def other():
        try:
            result["report"] = reconcile()
        finally:
            connections.close_all()

    with reconcile_lock() as held:
        assert held
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(30)
    assert result["report"].skipped == "another reconcile is running"
    assert fake_provider.spawned == [] and not Worker.objects.exists()
    assert len(reconcile().spawned) == 1  # lock released: the next pass runs


def test_query_count_is_constant_when_spawning_too(fake_provider, alpha_agent):
    """A pass that spawns costs the same number of queries for 10 or 1,000 waiting
    conversations (10 or 1,000 messages)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from agents.models import Conversation

    def seed(n, offset):
        conversations = Conversation.objects.bulk_create(
            Conversation(conversation_id=f"c{offset + i}", agent=alpha_agent) for i in range(n)
        )
        Message.objects.bulk_create(
            Message(conversation=c, agent_key="alpha", payload={}) for c in conversations
        )

    counts = []
    for n, offset in ((10, 0), (1000, 100)):
        Worker.objects.all().delete()
        seed(n, offset)
        with CaptureQueriesContext(connection) as queries:
            assert len(reconcile().spawned) == 1
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1]


def test_worker_never_heard_from_gets_stale_after_to_show_up(fake_provider, runtime_config):
    """issue_worker_token creates a row with no heartbeat; the hand-started worker has
    stale_after to make its first call before reconcile drains the row."""
    now = timezone.now()
    fresh = Worker.objects.create(worker_id="fresh", provider="none")
    Worker.objects.create(
        worker_id="forgotten", provider="none", created_at=now - dt.timedelta(seconds=421)
    )
    assert reconcile().drained == ["forgotten"]
    assert Worker.objects.get(pk=fresh.pk).status == "active"


def test_unexpected_spawn_error_is_contained_and_torn_down(fake_provider, alpha_agent, enqueue):
    """A provider bug must not abort the pass or forget the row: what it may have created
    is unknown, so the row goes through teardown."""
    enqueue("conv-1", "alpha")
    enqueue("conv-2", "alpha")
    RuntimeConfig.objects.filter(pk=1).update(spawn_step=2)
    calls = []

    def flaky_spawn(self, request):
        calls.append(request.worker_id)
        if len(calls) == 1:
            raise KeyError("id")
        return SpawnResult(machine_id="m-ok")

    original = RecordingProvider.spawn
    RecordingProvider.spawn = flaky_spawn
    try:
        report = reconcile()
    finally:
        RecordingProvider.spawn = original
    failed, ok = calls
    assert report.spawn_failed == [failed] and report.spawned == [ok]
    row = Worker.objects.get(worker_id=failed)
    assert row.status == "stopping" and "unexpected error: KeyError" in row.last_error
    assert reconcile().stopped == [failed]  # the next pass tears it down
    assert fake_provider.torn_down == [(failed, False)]
    assert Worker.objects.get(worker_id=failed).status == "stopped"


def test_a_persistent_teardown_error_is_audited_once(fake_provider, runtime_config):
    Worker.objects.create(worker_id="w1", provider="fake", machine_id="m1", status="stopping")
    fake_provider.fail_teardown = True
    for _ in range(3):
        assert reconcile().teardown_failed == ["w1"]
    audits = AuditEvent.objects.filter(action="workers.reconcile")
    assert audits.count() == 1
    assert audits.get().details["errors"] == ["teardown w1: api down"]
    fake_provider.fail_teardown = False
    assert reconcile().stopped == ["w1"]
    assert audits.count() == 2  # the recovery is recorded
