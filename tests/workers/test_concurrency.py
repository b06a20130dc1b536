"""Claim under real concurrency: 8 threads, each with its own PostgreSQL connection.

200 conversations × 10 messages. Each thread runs a worker that claims, heartbeats and
completes; when its worker's conversation has no more work the worker is stopped and the
thread goes on under a fresh worker identity (as a new machine would). A monitor thread on
its own connection watches the whole run for a conversation with two processing messages.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest
from django.db import connection, connections
from django.utils import timezone

from agents.models import AgentProfile, Conversation
from workers import leases
from workers.lifecycle import transition_worker
from workers.models import Message, Worker

CONVERSATIONS = 200
PER_CONVERSATION = 10
THREADS = 8
DEADLINE_SECONDS = 240

TWO_PROCESSING = (
    "SELECT conversation_id, COUNT(*) FROM workers_message WHERE status = 'processing' "
    "GROUP BY conversation_id HAVING COUNT(*) > 1"
)


def _seed() -> None:
    agent = AgentProfile.objects.create(agent_key="load")
    conversations = Conversation.objects.bulk_create(
        Conversation(conversation_id=f"c-{i}", agent=agent) for i in range(CONVERSATIONS)
    )
    now = timezone.now()
    # Same priority and time everywhere: claim order within a conversation is id order, and
    # ids grow with seq because the rows are created seq by seq.
    Message.objects.bulk_create(
        Message(
            conversation=conv,
            agent_key="load",
            payload={"seq": seq},
            scheduled_for=now,
            created_at=now,
        )
        for seq in range(PER_CONVERSATION)
        for conv in conversations
    )


class Run:
    """What the threads saw, recorded under one lock at the moment they saw it."""

    def __init__(self):
        self.lock = threading.Lock()
        self.claimed: dict[int, str] = {}  # message id → worker id
        self.next_seq: dict[int, int] = defaultdict(int)  # conversation pk → expected seq
        self.served: dict[str, set[int]] = defaultdict(set)  # worker id → conversations
        self.identities = 0
        self.violations: list[str] = []
        self.errors: list[BaseException] = []
        self.monitor_samples = 0
        self.finished = threading.Event()

    def record_claim(self, worker_id: str, job: leases.ClaimedJob) -> None:
        message = job.message
        with self.lock:
            if message.pk in self.claimed:
                self.violations.append(
                    f"message {message.pk} claimed by {self.claimed[message.pk]} and {worker_id}"
                )
            self.claimed[message.pk] = worker_id
            expected = self.next_seq[message.conversation_id]
            if message.payload["seq"] != expected:
                self.violations.append(
                    f"conversation {message.conversation_id}: seq {message.payload['seq']} "
                    f"claimed when {expected} was next"
                )
            self.next_seq[message.conversation_id] = message.payload["seq"] + 1
            self.served[worker_id].add(message.conversation_id)


def _unfinished() -> int:
    return Message.objects.filter(status__in=[Message.QUEUED, Message.PROCESSING]).count()


def _claimer(run: Run, thread_no: int) -> None:
    generation = 0

    def fresh_worker() -> Worker:
        nonlocal generation
        generation += 1
        with run.lock:
            run.identities += 1
        return Worker.objects.create(
            worker_id=f"t{thread_no}-g{generation}", heartbeat_at=timezone.now()
        )

    try:
        worker = fresh_worker()
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            job = leases.claim_next_job(worker)
            if job is None:
                if worker.assigned_conversation_id is not None:
                    # Its conversation has no more work: this worker is done; a new one
                    # (a fresh identity, unassigned) takes over the thread.
                    transition_worker(worker, Worker.STOPPED, reason="conversation finished")
                    worker = fresh_worker()
                    continue
                if _unfinished() == 0:
                    return
                time.sleep(0.005)  # everything left is owned by other live workers
                continue
            run.record_claim(worker.worker_id, job)
            conv = job.message.conversation_id
            busy = Message.objects.filter(conversation_id=conv, status="processing").count()
            if busy != 1:
                with run.lock:
                    run.violations.append(f"{busy} processing in conversation {conv}")
            leases.heartbeat_job(worker, job.message.pk, job.lease_id)
            leases.complete_job(worker, job.message.pk, job.lease_id)
        with run.lock:
            run.violations.append(f"thread {thread_no} hit the deadline")
    except BaseException as exc:  # surfaced in the main thread
        run.errors.append(exc)
    finally:
        connections.close_all()


def _monitor(run: Run) -> None:
    """Samples the whole table for a conversation with two processing messages."""
    try:
        while not run.finished.is_set():
            with connection.cursor() as cursor:
                cursor.execute(TWO_PROCESSING)
                rows = cursor.fetchall()
            with run.lock:
                run.monitor_samples += 1
                run.violations.extend(f"monitor saw {n} processing in {c}" for c, n in rows)
            time.sleep(0.01)
    except BaseException as exc:
        run.errors.append(exc)
    finally:
        connections.close_all()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_claimers_never_collide():
    assert connection.vendor == "postgresql"
    _seed()
    run = Run()
    monitor = threading.Thread(target=_monitor, args=(run,))
    claimers = [threading.Thread(target=_claimer, args=(run, n)) for n in range(THREADS)]
    monitor.start()
    for thread in claimers:
        thread.start()
    for thread in claimers:
        thread.join(timeout=DEADLINE_SECONDS + 30)
    run.finished.set()
    monitor.join(timeout=30)
    assert not any(t.is_alive() for t in [*claimers, monitor]), "a thread hung"
    assert not run.errors, run.errors
    assert not run.violations, run.violations[:10]
    # The monitor really watched the run (not just its end).
    assert run.monitor_samples >= 10, run.monitor_samples

    total = CONVERSATIONS * PER_CONVERSATION
    all_ids = set(Message.objects.values_list("id", flat=True))
    assert set(run.claimed) == all_ids and len(run.claimed) == total  # each exactly once
    assert Message.objects.filter(status=Message.DONE).count() == total  # nothing left
    assert all(seq == PER_CONVERSATION for seq in run.next_seq.values())
    assert len(run.next_seq) == CONVERSATIONS
    # One warm workspace per conversation: no worker identity served two conversations,
    # so threads really moved on to fresh identities (at least one per conversation).
    assert all(len(convs) == 1 for convs in run.served.values())
    assert run.identities >= CONVERSATIONS
    assert not Worker.objects.filter(status=Worker.ACTIVE, load__gt=0).exists()
