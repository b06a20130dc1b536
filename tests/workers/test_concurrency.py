"""Claim under real concurrency: separate PostgreSQL connections in threads."""

from __future__ import annotations

import threading
from collections import defaultdict

import pytest
from django.db import connection, connections
from django.utils import timezone

from agents.models import AgentProfile, Conversation
from workers import leases
from workers.models import Message, Worker

CONVERSATIONS = 200
PER_CONVERSATION = 10
THREADS = 8


def _seed():
    agent = AgentProfile.objects.create(agent_key="load")
    conversations = Conversation.objects.bulk_create(
        Conversation(conversation_id=f"c-{i}", agent=agent) for i in range(CONVERSATIONS)
    )
    now = timezone.now()
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


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_claimers_never_collide():
    _seed()
    claimed: list[tuple[int, int, str]] = []  # (message id, seq, conversation)
    violations: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def run(thread_no: int):
        try:
            generation = 0
            worker = Worker.objects.create(
                worker_id=f"t{thread_no}-g{generation}", heartbeat_at=timezone.now()
            )
            idle_rounds = 0
            while idle_rounds < 3:
                job = leases.claim_next_job(worker)
                if job is None:
                    # This worker's conversation is finished: retire it, take a fresh identity.
                    Worker.objects.filter(pk=worker.pk).update(
                        status="stopped", assigned_conversation=None
                    )
                    generation += 1
                    worker = Worker.objects.create(
                        worker_id=f"t{thread_no}-g{generation}", heartbeat_at=timezone.now()
                    )
                    idle_rounds += 1
                    continue
                idle_rounds = 0
                conv = job.message.conversation_id
                busy = Message.objects.filter(conversation_id=conv, status="processing").count()
                if busy != 1:
                    violations.append(f"{busy} processing in conversation {conv}")
                with lock:
                    claimed.append((job.message.pk, job.message.payload["seq"], conv))
                leases.complete_job(worker, job.message.pk, job.lease_id)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert not violations, violations[:5]
    ids = [c[0] for c in claimed]
    assert len(ids) == len(set(ids)), "a message was claimed twice"
    assert len(ids) == CONVERSATIONS * PER_CONVERSATION
    assert Message.objects.exclude(status="done").count() == 0
    order = defaultdict(list)
    for _, seq, conv in claimed:
        order[conv].append(seq)
    # Claims are appended after the claim commits and the next claim in a conversation can
    # only happen after completion, so the per-conversation append order is the claim order.
    for conv, seqs in order.items():
        assert seqs == sorted(seqs), f"conversation {conv} out of order: {seqs}"
    assert connection.vendor == "postgresql"
