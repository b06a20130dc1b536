"""A full fleet shares itself (SPEC §6.2), end to end: 12 conversations, max_workers 3, real
local worker processes. Every message is answered within reassign_after_seconds plus a few
seconds (not the 30-minute idle timeout), and a conversation moved between workers always
continues from the snapshot its previous worker wrote (no lost turn)."""

from __future__ import annotations

import time

import pytest

from agents.models import RuntimeConfig
from tests.e2e.test_end_to_end import onboard, post_update, replies, system  # noqa: F401
from workers.models import DataSnapshot, Message
from workers.reconcile import reconcile

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REASSIGN_AFTER = 2
# Spawning a worker (a Django process) and its first restore; a few seconds on a busy box.
FEW_SECONDS = 6
CONVERSATIONS = 12
ROUNDS = 3


@pytest.fixture
def full_fleet(system, monkeypatch):  # noqa: F811
    monkeypatch.setenv("AGENT_FACTORY_WORKER_HANDLER", "tests.e2e.handlers.counting")
    config = RuntimeConfig.get()
    config.max_workers = 3
    config.spawn_step = 3
    config.reassign_after_seconds = REASSIGN_AFTER
    config.handoff_timeout_seconds = 60
    config.save()
    return system


def answered_within(bot_id, chat, count, limit):
    """Drive reconcile (as the schedule would) until ``chat`` has ``count`` replies; returns
    the seconds it took, or fails once ``limit`` has passed."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        reconcile()
        if len(replies(bot_id, chat)) >= count:
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"chat {chat}: reply {count} not within {limit} s")


def test_twelve_conversations_share_three_workers(full_fleet):
    bot = onboard("alpha", "100:alpha-sandbox-token")
    chats = [600 + n for n in range(CONVERSATIONS)]
    limit = REASSIGN_AFTER + FEW_SECONDS
    latencies = []
    update_id = 0
    for turn in range(1, ROUNDS + 1):
        # Each round starts one conversation later, so a conversation's next turn goes to
        # another worker than its last one (the idle-longest order would otherwise repeat).
        for chat in chats[turn - 1 :] + chats[: turn - 1]:
            update_id += 1
            post_update(full_fleet, bot, update_id, f"turn {turn} of {chat}", user=chat)
            latencies.append(answered_within("100", chat, turn, limit))
    # No lost turn: every reply carries every earlier turn of its conversation, in order.
    for chat in chats:
        expected = [f"turn {t} of {chat}" for t in range(1, ROUNDS + 1)]
        assert replies("100", chat) == [" / ".join(expected[:n]) for n in range(1, ROUNDS + 1)]
    # The fleet never grew past max_workers, and conversations really moved between
    # workers: a later turn served by another worker than the earlier one, via a snapshot.
    served_by = {}
    for message in Message.objects.select_related("conversation").order_by("id"):
        served_by.setdefault(message.conversation.conversation_id, []).append(message.claimed_by)
    assert len({w for workers in served_by.values() for w in workers}) <= 3
    moved = [c for c, workers in served_by.items() if len(set(workers)) > 1]
    assert len(moved) >= CONVERSATIONS // 2, served_by
    assert DataSnapshot.objects.filter(status="ready").count() >= CONVERSATIONS
    print(f"latency max {max(latencies):.1f} s, mean {sum(latencies) / len(latencies):.1f} s")
