"""The per-conversation queue marker (``ConversationQueue``, kept by database triggers) always
says what the messages say, whatever changes them; and the unassigned claim that reads it
picks exactly what the whole-queue QuerySet picks (issue 11 item 8)."""

from __future__ import annotations

import datetime as dt
import random
import threading

import pytest
from django.db import OperationalError, connection, connections, transaction
from django.utils import timezone

from agents.models import Conversation, RuntimeConfig
from workers import claim, leases, sql_claim
from workers.lifecycle import live_worker_cutoff, live_workers
from workers.models import ConversationQueue, Message, Worker
from workers.queue import requeue_dead_letters
from workers.sweep import sweep_expired_leases


def expected_marker(conversation_pk: int) -> dict:
    """The marker as the slow QuerySet definitions compute it."""
    messages = Message.objects.filter(conversation_id=conversation_pk)
    head = messages.filter(status=Message.QUEUED).in_claim_order().first()
    return {
        "busy": messages.filter(status=Message.PROCESSING).exists(),
        "head_id": head.pk if head else None,
        "head_priority": head.priority if head else None,
        "head_scheduled_for": head.scheduled_for if head else None,
    }


def assert_markers_right() -> None:
    active = set(
        Message.objects.filter(status__in=[Message.QUEUED, Message.PROCESSING]).values_list(
            "conversation_id", flat=True
        )
    )
    markers = {m.conversation_id: m for m in ConversationQueue.objects.all()}
    assert active <= set(markers), f"no marker for {active - set(markers)}"
    for pk, marker in markers.items():
        want = expected_marker(pk)
        got = {name: getattr(marker, name) for name in want}
        assert got == want, f"conversation {pk}"
        # The claim's lease, never later than the real one (a heartbeat only moves it later).
        leases_now = Message.objects.filter(conversation_id=pk, status=Message.PROCESSING)
        real = max((m.lease_expires_at for m in leases_now if m.lease_expires_at), default=None)
        if marker.busy_until is not None:
            assert real is not None and marker.busy_until <= real


class Rollback(Exception):
    pass


def unassigned_pick(now) -> int | None:
    """The conversation an unassigned worker's claim takes, claimed and rolled back."""
    picked = None
    try:
        with transaction.atomic():
            worker = Worker.objects.create(worker_id="probe", heartbeat_at=now)
            job = leases.claim_next_job(worker)
            picked = job.message.pk if job else None
            raise Rollback
    except Rollback:
        pass
    return picked


def whole_queue_pick(now) -> int | None:
    """The slow definition: the first candidate of the whole queue (no marker)."""
    config = RuntimeConfig.get_cached()
    probe = Worker(pk=-1, worker_id="probe")
    owners = live_workers(now, config).exclude(pk=probe.pk)
    candidates = Message.objects.claim_candidates(now, owners).exclude(
        claim._in_handoff(probe, now)
    )
    first = candidates.first()
    return first.pk if first else None


@pytest.mark.django_db
def test_random_operations_keep_the_marker_right_and_the_claim_exact(alpha_agent, enqueue):
    rng = random.Random(11)
    conversations = [f"c{n}" for n in range(6)]
    workers = []
    held: list[tuple[Worker, Message, str]] = []
    for step in range(150):
        now = timezone.now()
        op = rng.choice(
            ["enqueue"] * 4
            + ["claim", "claim", "heartbeat", "complete", "fail", "expire", "sweep"]
            + ["requeue", "reprioritise", "delete", "claim_in"]
        )
        if op == "enqueue":
            later = dt.timedelta(seconds=rng.choice([-60, 0, 0, 3600]))
            enqueue(
                rng.choice(conversations),
                "alpha",
                priority=rng.choice([0, 50, 50, 100]),
                scheduled_for=now + later,
                max_attempts=2,
            )
        elif op in ("claim", "claim_in"):
            worker = Worker.objects.create(worker_id=f"w{step}", heartbeat_at=now)
            workers.append(worker)
            wanted = rng.choice(conversations) if op == "claim_in" else None
            job = leases.claim_next_job(worker, conversation_id=wanted)
            if job:
                held.append((worker, job.message, job.lease_id))
        elif op in ("heartbeat", "complete", "fail") and held:
            worker, message, lease = held.pop(rng.randrange(len(held)))
            try:
                if op == "heartbeat":
                    leases.heartbeat_job(worker, message.pk, lease)
                    held.append((worker, message, lease))
                elif op == "complete":
                    leases.complete_job(worker, message.pk, lease)
                else:
                    leases.fail_job(worker, message.pk, lease, "boom")
            except leases.LeaseLost:
                pass
        elif op == "expire":
            Message.objects.filter(status=Message.PROCESSING).order_by("?").filter(
                pk__in=Message.objects.filter(status=Message.PROCESSING).values("pk")[:1]
            ).update(lease_expires_at=now - dt.timedelta(seconds=1))
        elif op == "sweep":
            sweep_expired_leases()
        elif op == "requeue":
            dead = Message.objects.filter(status=Message.DEAD_LETTER).values_list("pk", flat=True)
            requeue_dead_letters(list(dead), actor="test")
        elif op == "reprioritise":
            Message.objects.filter(
                pk__in=Message.objects.filter(status=Message.QUEUED).values("pk")[:2]
            ).update(priority=rng.choice([10, 90]))
        elif op == "delete":
            Message.objects.filter(
                pk__in=Message.objects.filter(status=Message.QUEUED).values("pk")[:1]
            ).delete()
        if rng.random() < 0.3 and workers:  # workers come and go
            Worker.objects.filter(pk=rng.choice(workers).pk).update(status=Worker.STOPPED)
        assert_markers_right()
        probe_now = timezone.now()
        assert unassigned_pick(probe_now) == whole_queue_pick(probe_now), f"step {step}: {op}"


@pytest.mark.django_db
def test_the_claim_skips_busy_conversations_without_reading_them(alpha_agent, enqueue):
    """The marker's answer is small: busy conversations with a live lease are not in it."""
    now = timezone.now()
    for n in range(5):
        enqueue(f"busy-{n}", "alpha", priority=100)
        enqueue(f"busy-{n}", "alpha", priority=100)
    Message.objects.filter(
        pk__in=[
            Message.objects.filter(conversation__conversation_id=f"busy-{n}").order_by("pk")[0].pk
            for n in range(5)
        ]
    ).update(
        status=Message.PROCESSING,
        claimed_by="ghost",
        lease_id="x",
        lease_expires_at=now + dt.timedelta(hours=1),
    )
    free = enqueue("free", "alpha", priority=0)
    worker = Worker.objects.create(worker_id="u", heartbeat_at=now)
    config = RuntimeConfig.get()
    found = sql_claim.claimable_conversations(
        worker, timezone.now(), live_worker_cutoff(now, config), [], 8
    )
    assert found == ([free.conversation_id], [])
    assert leases.claim_next_job(worker).message.pk == free.pk


@pytest.mark.django_db
def test_claimable_conversations_matches_its_queryset_twin(alpha_agent, enqueue, make_worker):
    now = timezone.now()
    enqueue("due", "alpha", priority=90)
    enqueue("later", "alpha", priority=100, scheduled_for=now + dt.timedelta(hours=1))
    enqueue("later", "alpha", priority=10)
    enqueue("owned", "alpha", priority=80)
    enqueue("handoff", "alpha", priority=70)
    enqueue("expired", "alpha")
    enqueue("skipped", "alpha", priority=60)
    Message.objects.filter(conversation__conversation_id="expired").update(
        status=Message.PROCESSING, lease_expires_at=now - dt.timedelta(seconds=5)
    )
    Conversation.objects.filter(conversation_id="handoff").update(
        handoff_until=now + dt.timedelta(minutes=2), handoff_from_worker="gone"
    )
    owned = Conversation.objects.get(conversation_id="owned")
    make_worker("owner", heartbeat_at=now, assigned_conversation=owned)
    me, _ = make_worker("me", heartbeat_at=now)
    skipped = Conversation.objects.get(conversation_id="skipped").pk
    now = timezone.now()  # everything enqueued above is due, but "later"'s first message
    cutoff = live_worker_cutoff(now, RuntimeConfig.get())

    free, doubtful = sql_claim.claimable_conversations(me, now, cutoff, [skipped], 8)

    queue = ConversationQueue.objects
    owners = Worker.objects.live(cutoff).exclude(pk=me.pk).values("assigned_conversation")
    handoffs = Conversation.objects.filter(handoff_until__gt=now).exclude(
        handoff_from_worker=me.worker_id
    )
    twin_free = list(
        queue.filter(busy=False, head_id__isnull=False, head_scheduled_for__lte=now)
        .exclude(conversation_id__in=[skipped])
        .exclude(conversation_id__in=owners)
        .exclude(conversation_id__in=handoffs.values("pk"))
        .order_by("-head_priority", "head_scheduled_for", "head_id")
        .values_list("conversation_id", flat=True)[:8]
    )
    twin_doubtful = set(
        queue.filter(busy=False, head_id__isnull=False, head_scheduled_for__gt=now).values_list(
            "conversation_id", flat=True
        )
    ) | set(
        queue.filter(busy=True)
        .exclude(busy_until__gt=now)
        .values_list("conversation_id", flat=True)
    )
    assert free == twin_free
    assert set(doubtful) == twin_doubtful
    by_name = dict(Conversation.objects.values_list("pk", "conversation_id"))
    assert [by_name[pk] for pk in free] == ["due"]
    assert {by_name[pk] for pk in doubtful} == {"later", "expired"}


def _enqueuer(conversation_ids, rounds, errors):
    from workers.queue import enqueue_message

    try:
        for n in range(rounds):
            for conversation_id in conversation_ids:
                enqueue_message(
                    conversation_id=conversation_id,
                    agent_key="alpha",
                    payload={"provider": "t", "provider_user_id": "u", "message_text": str(n)},
                    priority=random.choice([10, 50, 90]),
                )
    except BaseException as exc:
        errors.append(exc)
    finally:
        connections.close_all()


def _worker_loop(name, rounds, errors):
    try:
        for n in range(rounds):
            worker = Worker.objects.create(worker_id=f"{name}-{n}", heartbeat_at=timezone.now())
            job = leases.claim_next_job(worker)
            if job is not None:
                if n % 3 == 0:
                    leases.fail_job(worker, job.message.pk, job.lease_id, "again")
                else:
                    leases.complete_job(worker, job.message.pk, job.lease_id)
            Worker.objects.filter(pk=worker.pk).update(status=Worker.STOPPED)
    except BaseException as exc:
        errors.append(exc)
    finally:
        connections.close_all()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_enqueues_claims_and_completions_keep_the_marker_right(alpha_agent):
    """Real concurrent connections writing the same conversations: no update is lost."""
    assert connection.vendor == "postgresql"
    conversations = [f"hot-{n}" for n in range(4)]
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_enqueuer, args=(conversations, 40, errors)) for _ in range(3)
    ] + [threading.Thread(target=_worker_loop, args=(f"t{n}", 40, errors)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert_markers_right()


def _hold_conversation(conversation_pk: int, held: threading.Event, release: threading.Event):
    """Another claimer, working in one conversation: its row locked until ``release``."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM agents_conversation WHERE id = %s FOR NO KEY UPDATE",
                [conversation_pk],
            )
            held.set()
            release.wait(30)
    finally:
        connections.close_all()


def _lockable_now(message_pk: int, answer: list) -> None:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM workers_message WHERE id = %s FOR UPDATE NOWAIT", [message_pk]
            )
        answer.append(True)
    except OperationalError:
        answer.append(False)
    finally:
        connections.close_all()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_claim_passed_over_a_busy_conversation_holds_no_lock_on_its_messages(
    alpha_agent, enqueue
):
    """The deadlock CI met: a claimer that passes a conversation another claimer holds must
    not keep its head message locked, or the two wait for each other's heads."""
    busy_head = enqueue("busy", "alpha", priority=90)
    enqueue("free", "alpha", priority=10)
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(
        target=_hold_conversation, args=(busy_head.conversation_id, held, release)
    )
    holder.start()
    try:
        assert held.wait(10)
        with transaction.atomic():  # the claimer's transaction, still open below
            worker = Worker.objects.create(worker_id="w", heartbeat_at=timezone.now())
            job = leases.claim_next_job(worker)
            assert job.message.conversation.conversation_id == "free"
            answer: list[bool] = []
            probe = threading.Thread(target=_lockable_now, args=(busy_head.pk, answer))
            probe.start()
            probe.join(10)
            assert answer == [True]
    finally:
        release.set()
        holder.join(10)


@pytest.mark.django_db
def test_the_sweep_catches_a_marker_up_with_a_lease_that_heartbeats_kept_alive(
    alpha_agent, enqueue
):
    enqueue("long", "alpha")
    worker = Worker.objects.create(worker_id="w", heartbeat_at=timezone.now())
    job = leases.claim_next_job(worker)
    real = Message.objects.get(pk=job.message.pk).lease_expires_at
    # As after heartbeats past the claim's own lease: the marker's copy is behind.
    ConversationQueue.objects.update(busy_until=timezone.now() - dt.timedelta(seconds=1))
    sweep_expired_leases()
    assert ConversationQueue.objects.get().busy_until == real
    assert Message.objects.get(pk=job.message.pk).status == Message.PROCESSING
