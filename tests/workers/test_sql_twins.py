"""Every raw fast path of ``workers/sql.py`` gives the same answer as its QuerySet twin, on
whichever database the suite runs (SQLite locally, SQLite and PostgreSQL in CI)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.forms.models import model_to_dict
from django.utils import timezone

from agents.models import Conversation
from workers import sql
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
    """The QuerySet spelling of ``sql.next_ready_in_conversation``."""
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
    "order: priority, then scheduled_for, then id": ["queued p10", "queued p90 later", "queued p90"],
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


def build(conversation, rows, now, claimer):
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
            Worker.objects.create(worker_id=f"owner-{n}", **fields)
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

    raw = sql.next_ready_in_conversation(claimer.pk, conversation.pk, now, cutoff)
    message, busy, owned_by_other = twin_next_ready(claimer, conversation, now, cutoff)

    assert (raw.pk if raw else None) == (message.pk if message else None)
    if raw is not None:
        assert (bool(raw.busy), bool(raw.owned_by_other)) == (busy, owned_by_other)
        assert model_to_dict(raw) == model_to_dict(message)


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
