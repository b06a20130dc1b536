"""The warm worker's claim in one round trip (``sql_warm_claim.claim_assigned``): whatever the
case, the claim answers and writes exactly what the ordinary claim (one transaction, the
rules checked in Python between its statements) answers and writes. Its twin is that
ordinary path, the one it falls back to whenever it took nothing, and where the database
cannot pipeline (SQLite) the only path."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection, transaction
from django.utils import timezone

from agents.models import Conversation
from workers import claim, tokens
from workers.models import Message, Worker
from workers.tokens import mint_worker_token, revoke_worker_token

pytestmark = pytest.mark.postgres


class _Undo(Exception):
    pass


def _outcome(worker_pk: int, asked: str | None, caller_assigned: int | None, sent=None) -> tuple:
    """What a claim by the worker answers and writes; ``caller_assigned`` is the
    assignment the caller's copy of the worker holds (it may be out of date). ``sent``
    collects what the claim sends (``_recording``)."""
    before = timezone.now()
    caller = Worker.objects.get(pk=worker_pk)
    caller.assigned_conversation_id = caller_assigned
    with connection.execute_wrapper(_recording(sent if sent is not None else [])):
        job = claim.claim_next_job(caller, conversation_id=asked)
    worker = Worker.objects.get(pk=worker_pk)
    if job is not None:
        assert (caller.assigned_conversation_id, caller.load) == (
            worker.assigned_conversation_id,
            worker.load,
        )
    return _written(worker_pk, job, before)


def _outcome_by_token(worker_pk: int, raw: str, asked: str | None, sent: list) -> tuple:
    """What a claim by the worker's token answers and writes (``claim.claim_by_token``)."""
    before = timezone.now()
    with connection.execute_wrapper(_recording(sent)):
        landed = claim.claim_by_token(tokens.parse(raw), conversation_id=asked)
    assert landed is not None and landed.worker_id == "w-warm"
    return _written(worker_pk, landed.answer, before)


def _written(worker_pk: int, job, before) -> tuple:
    """The claim's answer and what it wrote."""
    worker = Worker.objects.get(pk=worker_pk)
    messages = list(
        Message.objects.order_by("pk").values_list("pk", "status", "claimed_by", "attempts")
    )
    lease = None
    if job is not None:
        held = Message.objects.get(pk=job.message.pk)
        assert (held.lease_id, held.lease_expires_at) == (job.lease_id, job.lease_expires_at)
        assert worker.assigned_lease_id == job.lease_id
        assert job.message.claimed_by == "w-warm"
        lease = (job.message.pk, job.message.conversation.conversation_id, job.attempt)
    return (
        lease,
        messages,
        worker.status,
        worker.load,
        worker.assigned_conversation_id,
        worker.assigned_agent_key,
        worker.assigned_at,
        worker.heartbeat_at is not None and worker.heartbeat_at >= before,
    )


def _ordinary(monkeypatch, *args) -> tuple:
    """The ordinary path's outcome, rolled back afterwards."""
    with monkeypatch.context() as patch:
        patch.setattr(claim, "can_pipeline", lambda: False)
        try:
            with transaction.atomic():
                result = _outcome(*args)
                raise _Undo
        except _Undo:
            return result


SCENARIOS = [
    "ready",
    "asked for it",
    "asked for another",
    "stale worker",
    "draining worker",
    "handoff to it",
    "handoff from another",
    "busy",
    "lease ran out",
    "the last one's lease ran out",
    "owned by another",
    "not due yet",
    "nothing queued",
    "moved meanwhile",
]
# The cases the one round trip answers by itself (a job, or None with nothing to take); in
# the others it takes nothing and the ordinary claim answers.
DECIDED_AT_ONCE = {"ready", "asked for it", "handoff to it", "not due yet", "nothing queued"}


@pytest.mark.parametrize("by_token", [False, True], ids=["by-pk", "by-token"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_one_round_trip_claim_answers_as_the_ordinary_claim(
    alpha_agent, enqueue, monkeypatch, scenario, by_token
):
    now = timezone.now()
    first = enqueue("warm", "alpha", "first")
    enqueue("warm", "alpha", "second")
    elsewhere = enqueue("elsewhere", "alpha", "other conversation")
    conversation = first.conversation
    worker = Worker.objects.create(
        worker_id="w-warm",
        heartbeat_at=now,
        assigned_conversation=conversation,
        assigned_at=now - dt.timedelta(minutes=3),
    )
    asked, caller_assigned = None, conversation.pk
    if scenario == "asked for it":
        asked = "warm"
    elif scenario == "asked for another":
        asked = "elsewhere"
    elif scenario == "stale worker":
        Worker.objects.filter(pk=worker.pk).update(heartbeat_at=now - dt.timedelta(hours=2))
    elif scenario == "draining worker":
        Worker.objects.filter(pk=worker.pk).update(status=Worker.DRAINING)
    elif scenario in ("handoff to it", "handoff from another"):
        origin = "w-warm" if scenario == "handoff to it" else "w-gone"
        Conversation.objects.filter(pk=conversation.pk).update(
            handoff_from_worker=origin, handoff_until=now + dt.timedelta(minutes=1)
        )
    elif scenario in ("busy", "lease ran out"):
        expiry = dt.timedelta(minutes=5 if scenario == "busy" else -1)
        Message.objects.filter(pk=first.pk).update(
            status=Message.PROCESSING,
            claimed_by="w-warm",
            lease_id="l",
            lease_expires_at=now + expiry,
        )
    elif scenario == "the last one's lease ran out":
        Message.objects.filter(conversation=conversation).exclude(pk=first.pk).update(
            status=Message.DONE
        )
        Message.objects.filter(pk=first.pk).update(
            status=Message.PROCESSING,
            claimed_by="w-warm",
            lease_id="l",
            lease_expires_at=now - dt.timedelta(minutes=1),
        )
    elif scenario == "owned by another":
        Worker.objects.create(
            worker_id="w-owner", heartbeat_at=now, assigned_conversation=conversation
        )
    elif scenario == "not due yet":
        Message.objects.filter(conversation=conversation).update(
            scheduled_for=now + dt.timedelta(minutes=5)
        )
    elif scenario == "nothing queued":
        Message.objects.filter(conversation=conversation).update(status=Message.DONE)
    elif scenario == "moved meanwhile":
        Worker.objects.filter(pk=worker.pk).update(assigned_conversation=elsewhere.conversation)

    expected = _ordinary(monkeypatch, worker.pk, asked, caller_assigned)
    sent = []
    if by_token:
        # By token the claim reads the worker's assignment itself: the ordinary claim to
        # compare with is that of a caller that knows it.
        actual = Worker.objects.get(pk=worker.pk).assigned_conversation_id
        expected = _ordinary(monkeypatch, worker.pk, asked, actual)
        assert _outcome_by_token(worker.pk, mint_worker_token(worker), asked, sent) == expected
    else:
        assert _outcome(worker.pk, asked, caller_assigned, sent) == expected
    assert sent[:2] == ["pipeline", "pipeline"]
    # By token the worker's assignment is read in the round trip, never out of date.
    decided = DECIDED_AT_ONCE | ({"moved meanwhile"} if by_token else set())
    assert (len(sent) == 2) is (scenario in decided), sent
    # Undecided, the full claim follows: by token without looking the token up again.
    assert "TOKEN LOOKUP" not in sent


def _recording(sent: list):
    """Notes, per statement, whether it went in a pipeline (the claim's first two always do);
    other statements by their first word, or as a token lookup."""
    from psycopg.pq import PipelineStatus

    def record(execute, sql, params, many, context):
        pipelined = connection.connection.pgconn.pipeline_status == PipelineStatus.ON
        if pipelined:
            sent.append("pipeline")
        else:
            sent.append("TOKEN LOOKUP" if "token_prefix" in sql else sql.split()[0].upper())
        return execute(sql, params, many, context)

    return record


def test_a_warm_claim_sends_its_two_statements_in_one_round_trip(alpha_agent, enqueue):
    """The lock and the take go together (psycopg's pipeline mode), with no transaction of
    the claim's own around them: nothing else is sent."""
    from psycopg.pq import PipelineStatus

    message = enqueue("warm", "alpha")
    worker = Worker.objects.create(
        worker_id="w-warm", heartbeat_at=timezone.now(), assigned_conversation=message.conversation
    )
    sent = []

    def record(execute, sql, params, many, context):
        sent.append(connection.connection.pgconn.pipeline_status)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        job = claim.claim_next_job(worker, conversation_id="warm")
    assert job is not None and job.message.pk == message.pk
    assert sent == [PipelineStatus.ON, PipelineStatus.ON]
    assert Message.objects.get(pk=message.pk).status == Message.PROCESSING


@pytest.mark.django_db(transaction=True)
def test_the_one_round_trip_is_one_transaction(alpha_agent, enqueue):
    """Outside a transaction, the two statements commit together at the end: when the take
    fails, the lock statement's work is undone with it and the claim fails as a whole."""
    from django.db import DatabaseError

    message = enqueue("warm", "alpha")
    worker = Worker.objects.create(
        worker_id="w-warm", heartbeat_at=timezone.now(), assigned_conversation=message.conversation
    )

    def fail_the_take(execute, sql, params, many, context):
        if "taken AS" in sql:
            sql = sql.replace("RETURNING u.id", "RETURNING u.id / 0", 1)
        return execute(sql, params, many, context)

    with pytest.raises(DatabaseError), connection.execute_wrapper(fail_the_take):
        claim.claim_next_job(worker, conversation_id="warm")
    assert Message.objects.get(pk=message.pk).status == Message.QUEUED
    assert connection.connection.pgconn.transaction_status == 0  # idle: nothing left open
    job = claim.claim_next_job(worker, conversation_id="warm")
    assert job is not None and job.message.pk == message.pk


@pytest.mark.parametrize("token", ["unknown", "revoked", "another worker's newer prefix"])
def test_a_claim_by_a_token_without_owner_takes_and_locks_nothing(alpha_agent, enqueue, token):
    message = enqueue("warm", "alpha")
    worker = Worker.objects.create(
        worker_id="w-warm", heartbeat_at=timezone.now(), assigned_conversation=message.conversation
    )
    raw = mint_worker_token(worker)
    if token == "unknown":
        raw = raw.rsplit("_", 1)[0] + "_not-the-secret"
    elif token == "revoked":
        revoke_worker_token(worker)
    else:
        newer = Worker.objects.create(worker_id="w-newer", heartbeat_at=timezone.now())
        mint_worker_token(newer)
        Worker.objects.filter(pk=newer.pk).update(token_prefix=tokens.parse(raw).prefix)
    before = list(Worker.objects.order_by("pk").values()), list(Message.objects.values())
    assert claim.claim_by_token(tokens.parse(raw), conversation_id="warm") is None
    assert (list(Worker.objects.order_by("pk").values()), list(Message.objects.values())) == before
