"""Every raw fast path of ``workers/sql.py`` and ``workers/sql_claim.py`` gives the same answer
as its QuerySet twin, on whichever database the suite runs (SQLite locally, SQLite and
PostgreSQL in CI)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.forms.models import model_to_dict
from django.utils import timezone

from agents.models import Conversation
from workers import sql, sql_claim
from workers.models import Message, Worker


def snapshot(queryset) -> list[dict]:
    return [model_to_dict(row) for row in queryset.order_by("pk")]


# update ----------------------------------------------------------------------------------


@pytest.fixture
def leased_pair(alpha_agent, enqueue):
    """Two identical processing messages, one for each side of a comparison."""
    now = timezone.now()
    pair = [enqueue(f"conv-{n}", "alpha") for n in (1, 2)]
    Message.objects.filter(pk__in=[m.pk for m in pair]).update(
        status=Message.PROCESSING,
        claimed_by="w-a",
        lease_id="lease",
        lease_expires_at=now + dt.timedelta(minutes=5),
    )
    return pair, now


@pytest.mark.parametrize(
    "where",
    [
        # the fence holds: the write lands
        {"status": ("=", Message.PROCESSING), "lease_id": ("=", "lease")},
        # another lease, or a lease that ran out: nothing changes
        {"status": ("=", Message.PROCESSING), "lease_id": ("=", "other")},
        {"lease_expires_at": (">", "later")},
    ],
)
def test_update_matches_queryset_update(leased_pair, where):
    (raw_side, orm_side), now = leased_pair
    when = {"later": now + dt.timedelta(hours=1)}
    values = {
        "status": Message.DONE,
        "completed_at": now,
        "lease_expires_at": None,
        "last_error": "",
        "payload": {"kept": ["json", 1]},
    }
    conditions = [(name, op, when.get(value, value)) for name, (op, value) in where.items()]
    lookups = {
        f"{name}__{'gt' if op == '>' else 'exact'}": value for name, op, value in conditions
    }

    raw_count = sql.update(Message, values, ("pk", "=", raw_side.pk), *conditions)
    orm_count = Message.objects.filter(pk=orm_side.pk, **lookups).update(**values)

    assert raw_count == orm_count
    raw_row, orm_row = snapshot(Message.objects.filter(pk__in=[raw_side.pk, orm_side.pk]))
    for row in (raw_row, orm_row):  # what differs between the two rows from the start
        for name in ("id", "conversation", "scheduled_for", "created_at"):
            row.pop(name)
    assert raw_row == orm_row


# locked ----------------------------------------------------------------------------------


def test_locked_matches_select_for_update_get(alpha_agent, enqueue, make_worker):
    message = enqueue("conv-1", "alpha")
    worker, _ = make_worker("w-a", heartbeat_at=timezone.now())
    for model, pk in ((Message, message.pk), (Worker, worker.pk)):
        assert model_to_dict(sql.locked(model, pk)) == model_to_dict(
            model.objects.select_for_update().get(pk=pk)
        )
    with pytest.raises(Worker.DoesNotExist):
        sql.locked(Worker, worker.pk + 1000)
    with pytest.raises(Worker.DoesNotExist):
        Worker.objects.select_for_update().get(pk=worker.pk + 1000)


# next_ready_in_conversation -------------------------------------------------------------


def twin_next_ready(worker, conversation, now, cutoff):
    """The QuerySet spelling of ``sql_claim.next_ready_in_conversation``."""
    message = (
        Message.objects.ready(now)
        .filter(conversation=conversation)
        .in_claim_order()
        .select_for_update()
        .first()
    )
    busy = Message.objects.filter(conversation=conversation, status=Message.PROCESSING).exists()
    owned_by_other = (
        Worker.objects.live(cutoff)
        .filter(assigned_conversation=conversation)
        .exclude(pk=worker.pk)
        .exists()
    )
    return message, busy, owned_by_other


SCENARIOS = {
    "nothing queued": [],
    "claim order: priority, scheduled_for, id": ["queued p10", "queued p90 later", "queued p90"],
    "a message not due yet is not ready": ["queued p90 future", "queued p10"],
    "only future messages": ["queued p50 future"],
    "a processing message makes it busy": ["processing", "queued p50"],
    "busy even with an expired lease": ["processing expired", "queued p50"],
    "done and dead rows are ignored": ["done", "dead_letter", "queued p50"],
    "owned by another live worker": ["queued p50", "owner live"],
    "the claimer's own assignment is not another owner": ["queued p50", "owner self"],
    "a stale owner does not count": ["queued p50", "owner stale"],
    "a draining owner does not count": ["queued p50", "owner draining"],
}


def build(conversation, rows, now, claimer, prefix=""):
    for n, row in enumerate(rows):
        kind, _, rest = row.partition(" ")
        if kind == "owner":
            fields = {"assigned_conversation": conversation, "heartbeat_at": now}
            if rest == "self":
                Worker.objects.filter(pk=claimer.pk).update(**fields)
                continue
            if rest == "stale":
                fields["heartbeat_at"] = now - dt.timedelta(hours=1)
            if rest == "draining":
                fields["status"] = Worker.DRAINING
            Worker.objects.create(worker_id=f"{prefix}owner-{n}", **fields)
            continue
        priority = int(rest.split()[0][1:]) if rest.startswith("p") else 50
        scheduled = now - dt.timedelta(minutes=10 - n)
        if "later" in rest:
            scheduled = now - dt.timedelta(minutes=1)
        if "future" in rest:
            scheduled = now + dt.timedelta(minutes=5)
        lease = now + dt.timedelta(minutes=5 if "expired" not in rest else -5)
        Message.objects.create(
            conversation=conversation,
            agent_key="alpha",
            payload={"row": row},
            status=kind,
            priority=priority,
            scheduled_for=scheduled,
            lease_expires_at=lease if kind == "processing" else None,
        )


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_next_ready_in_conversation_matches_its_queryset_twin(
    alpha_agent, make_worker, enqueue, scenario
):
    now = timezone.now()
    cutoff = now - dt.timedelta(minutes=7)
    conversation = Conversation.objects.create(conversation_id="mine", agent=alpha_agent)
    enqueue("elsewhere", "alpha")  # another conversation's work is never an answer
    claimer, _ = make_worker("claimer", heartbeat_at=now)
    build(conversation, SCENARIOS[scenario], now, claimer)

    raw = sql_claim.next_ready_in_conversation(claimer.pk, conversation.pk, now, cutoff)
    message, busy, owned_by_other = twin_next_ready(claimer, conversation, now, cutoff)

    assert (raw.pk if raw else None) == (message.pk if message else None)
    if raw is not None:
        assert (bool(raw.busy), bool(raw.owned_by_other)) == (busy, owned_by_other)
        assert model_to_dict(raw) == model_to_dict(message)


# claim_next_ready ------------------------------------------------------------------------


def lease_fields(now, worker_id):
    message = {
        "status": Message.PROCESSING,
        "claimed_by": worker_id,
        "lease_id": "lease",
        "lease_expires_at": now + dt.timedelta(minutes=6),
        "claimed_at": now,
        "next_retry_at": None,
    }
    worker = {"load": 1, "last_claim_at": now, "heartbeat_at": now, "assigned_lease_id": "lease"}
    return message, worker


def comparable(row: dict) -> dict:
    """A row without what differs between the two worlds from the start."""
    skip = {"id", "conversation", "worker_id", "claimed_by", "token_prefix", "token_hash"}
    skip |= {"created_at", "updated_at", "scheduled_for", "assigned_conversation"}
    return {name: value for name, value in row.items() if name not in skip}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_claim_next_ready_matches_its_queryset_twin(alpha_agent, make_worker, scenario):
    now = timezone.now()
    cutoff = now - dt.timedelta(minutes=7)
    results = {}
    for side in ("raw", "orm"):
        conversation = Conversation.objects.create(conversation_id=side, agent=alpha_agent)
        claimer, _ = make_worker(f"claimer-{side}", heartbeat_at=now)
        build(conversation, SCENARIOS[scenario], now, claimer, prefix=side)
        message_values, worker_values = lease_fields(now, claimer.worker_id)
        if side == "raw":
            found = sql_claim.claim_next_ready(
                claimer.pk, conversation.pk, now, cutoff, message_values, worker_values
            )
            answer = found and (bool(found.busy), bool(found.owned_by_other), bool(found.taken))
            if found and connection.vendor == "postgresql":
                deferred = found.get_deferred_fields()
                assert {f.attname for f in Message._meta.concrete_fields} - deferred == set(
                    sql_claim.TAKEN_MESSAGE_FIELDS
                )
        else:
            found, busy, owned_by_other = twin_next_ready(claimer, conversation, now, cutoff)
            taken = found is not None and not busy and not owned_by_other
            if taken:
                Message.objects.filter(pk=found.pk).update(**message_values)
                Worker.objects.filter(pk=claimer.pk).update(
                    **worker_values, assigned_agent_key=found.agent_key
                )
            answer = found and (busy, owned_by_other, taken)
        results[side] = {
            "answer": answer,
            "found": found and found.payload,
            "messages": [comparable(m) for m in snapshot(conversation.messages.all())],
            "claimer": comparable(model_to_dict(Worker.objects.get(pk=claimer.pk))),
        }
    assert results["raw"] == results["orm"]


# finish_job ------------------------------------------------------------------------------


@pytest.mark.parametrize("lease", ["lease", "other", "expired"])
def test_finish_job_matches_its_queryset_twin(leased_pair, make_worker, lease):
    (raw_side, orm_side), now = leased_pair
    if lease == "expired":
        now += dt.timedelta(hours=1)
    done = {"status": Message.DONE, "completed_at": now, "lease_expires_at": None}
    idle = {"load": 0, "idle_since": now, "assigned_lease_id": ""}
    results = {}
    for side, message in (("raw", raw_side), ("orm", orm_side)):
        worker, _ = make_worker(f"w-{side}", load=1, assigned_lease_id="lease")
        fence = (
            ("pk", "=", message.pk),
            ("status", "=", Message.PROCESSING),
            ("claimed_by", "=", "w-a"),
            ("lease_id", "=", "lease" if lease != "other" else "other"),
            ("lease_expires_at", ">", now),
        )
        if side == "raw":
            landed = sql.finish_job(fence, done, worker.pk, idle)
        else:
            lookups = {
                f"{name}__{'gt' if op == '>' else 'exact'}": value for name, op, value in fence
            }
            landed = Message.objects.filter(**lookups).update(**done) == 1
            if landed:
                Worker.objects.filter(pk=worker.pk).update(**idle)
        results[side] = (
            landed,
            comparable(model_to_dict(Message.objects.get(pk=message.pk))),
            comparable(model_to_dict(Worker.objects.get(pk=worker.pk))),
        )
    assert results["raw"] == results["orm"]
    assert results["raw"][0] is (lease == "lease")


# conversation_key ------------------------------------------------------------------------


def test_conversation_key_matches_values_list(alpha_agent, beta_agent):
    Conversation.objects.create(conversation_id="a-conv", agent=alpha_agent)
    Conversation.objects.create(conversation_id="b-conv", agent=beta_agent)
    for conversation_id in ("a-conv", "b-conv", "missing", "A-CONV"):
        twin = (
            Conversation.objects.filter(conversation_id=conversation_id)
            .values_list("id", "agent_id")
            .first()
        )
        assert sql.conversation_key(conversation_id) == twin


# locked_worker_and_conversation ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("assigned", [True, False])
def test_locked_worker_and_conversation_matches_two_locks(alpha_agent, enqueue, assigned):
    from django.db import transaction

    conversation = enqueue("locked-conv", "alpha").conversation
    worker = Worker.objects.create(
        worker_id="w-lock", assigned_conversation=conversation if assigned else None
    )
    with transaction.atomic():
        got_worker, got_conversation = sql_claim.locked_worker_and_conversation(worker.pk)
        twin_worker = sql.locked(Worker, worker.pk)
        if connection.vendor == "postgresql":
            # Only what the claim reads is loaded; the rest stays deferred, as with only().
            loaded = {f.attname for f in Worker._meta.concrete_fields} - set(
                got_worker.get_deferred_fields()
            )
            assert loaded == set(sql_claim.LOCKED_WORKER_FIELDS)
        assert model_to_dict(got_worker) == model_to_dict(twin_worker)
        if not assigned:
            assert got_conversation is None
            return
        twin = sql.locked(Conversation, conversation.pk)
        for name in sql_claim.CLAIM_CONVERSATION_FIELDS:
            assert getattr(got_conversation, name) == getattr(twin, name)
        assert got_conversation.in_handoff_for("w-lock", timezone.now()) is False
    with pytest.raises(Worker.DoesNotExist), transaction.atomic():
        sql_claim.locked_worker_and_conversation(worker.pk + 1000)


@pytest.mark.postgres
def test_the_claim_statements_are_prepared_after_a_few_runs_on_postgresql(alpha_agent, enqueue):
    """Server-bound (workers.sql_cursor.prepared_cursor): a warm claim's statement is
    planned once per connection and keeps answering as its QuerySet twin."""
    message = enqueue("conv-1", "alpha")
    now = timezone.now()
    for _ in range(8):
        found = sql_claim.next_ready_in_conversation(-1, message.conversation_id, now, now)
        assert found.pk == message.pk and found.busy is False and found.owned_by_other is False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ["%owned_by_other%"],
        )
        assert cursor.fetchone()[0] == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_fast_paths_share_one_server_bound_cursor_per_connection():
    """workers.sql_cursor.prepared_cursor reuses its psycopg cursor on a connection (a new
    cursor builds its own adapters on every statement); each statement still gets its own
    answer, and a new connection gets a cursor of its own."""
    from workers.sql_cursor import prepared_cursor

    with prepared_cursor() as first:
        first.execute("SELECT %s::int", [1])
        raw = first.cursor
        assert first.fetchone() == (1,)
    with prepared_cursor() as second:
        second.execute("SELECT %s::int, %s::text", [2, "two"])
        assert second.cursor is raw and not raw.closed
        assert second.fetchone() == (2, "two")
    connection.close()
    with prepared_cursor() as third:
        third.execute("SELECT 3")
        assert third.cursor is not raw
        assert third.fetchone() == (3,)
