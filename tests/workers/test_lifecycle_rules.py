"""The worker lifecycle, enforced in one place (workers.lifecycle): forward only."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from django.utils import timezone

from workers.lifecycle import InvalidTransition, should_stop, transition_worker
from workers.models import Worker
from workers.tokens import authenticate, mint_worker_token

ORDER = ["active", "draining", "stopping", "stopped"]


@pytest.mark.parametrize(
    "start,target",
    [(a, b) for a, b in itertools.permutations(ORDER, 2) if ORDER.index(b) < ORDER.index(a)],
)
def test_no_way_back(db, start, target):
    worker = Worker.objects.create(worker_id="w", status=start)
    with pytest.raises(InvalidTransition, match=f"from '{start}' to '{target}'"):
        transition_worker(worker, target, reason="x")
    assert Worker.objects.get(pk=worker.pk).status == start


@pytest.mark.parametrize("start,target", [(a, b) for a, b in itertools.combinations(ORDER, 2)])
def test_forward_moves_are_allowed(db, start, target):
    worker = Worker.objects.create(worker_id="w", status=start)
    assert transition_worker(worker, target, reason="because").status == target
    assert Worker.objects.get(pk=worker.pk).status_reason == "because"


def test_same_status_is_a_no_op(db):
    worker = Worker.objects.create(worker_id="w", status="draining", status_reason="first")
    transition_worker(worker, "draining", reason="second")
    assert Worker.objects.get(pk=worker.pk).status_reason == "first"


def test_a_stale_instance_cannot_apply_a_transition_over_a_concurrent_one(db):
    worker = Worker.objects.create(worker_id="w")
    stale = Worker.objects.get(pk=worker.pk)
    transition_worker(worker, "draining", reason="idle timeout")
    transition_worker(Worker.objects.get(pk=worker.pk), "stopping", reason="snapshot")
    # The stale copy still says "active": its conditional update matches nothing.
    with pytest.raises(InvalidTransition, match="changed status concurrently"):
        transition_worker(stale, "draining", reason="late")
    assert Worker.objects.get(pk=worker.pk).status == "stopping"


def test_stopping_to_stopped_revokes_the_token_and_clears_the_assignment(db):
    worker = Worker.objects.create(worker_id="w", status="stopping", load=1, assigned_agent_key="a")
    token = mint_worker_token(worker)
    assert authenticate(token) is not None
    stopped = transition_worker(worker, "stopped", reason="torn down")
    assert authenticate(token) is None
    assert stopped.token_revoked_at is not None and stopped.stopped_at is not None
    assert (stopped.load, stopped.assigned_agent_key, stopped.assigned_conversation) == (
        0,
        "",
        None,
    )


def test_draining_records_when_it_started(db):
    now = timezone.now()
    worker = transition_worker(
        Worker.objects.create(worker_id="w"), "draining", reason="heartbeat stale", now=now
    )
    assert worker.draining_since == now


def test_should_stop_answers(db):
    now = timezone.now()
    active = Worker(worker_id="a", status="active", scheduled_shutdown_at=now + dt.timedelta(1))
    assert should_stop(active, now) == (False, None)
    assert should_stop(Worker(worker_id="b", status="active", scheduled_shutdown_at=now), now) == (
        True,
        "idle timeout",
    )
    draining = Worker(worker_id="c", status="draining", status_reason="drained by admin")
    assert should_stop(draining, now) == (True, "drained by admin")
