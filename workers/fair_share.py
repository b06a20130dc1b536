"""Fair share of a full fleet (SPEC §6.2): with ``max_workers`` reached and conversations
waiting, the workers idle longest give up their conversations and take the waiting ones.

Called by reconcile inside its transaction. A reassigned worker is retargeted: its
assignment moves to the waiting conversation (as a spawn target would), its ``control``
answer names the new conversation, and its next claim is the warm-path claim there. The
conversation it leaves is handed off (no other worker claims there until its snapshot of
it is stored), unless it never claimed in it (nothing to snapshot).
"""

from __future__ import annotations

import datetime as dt

from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Coalesce

from agents.models import RuntimeConfig
from workers.lifecycle import begin_handoff, live_workers, worked_in_assignment
from workers.models import Message, Worker


def idle_workers(config: RuntimeConfig, now: dt.datetime, limit: int) -> list[Worker]:
    """Up to ``limit`` live, active workers with no job for at least
    ``reassign_after_seconds``, idle longest first. One query, locked (skipping a worker
    that is claiming right now). A worker whose own conversation has ready work is about to
    claim it, so it is not idle (unless another live worker serves that conversation too)."""
    own_ready = Exists(
        Message.objects.ready(now).filter(conversation_id=OuterRef("assigned_conversation_id"))
    )
    shared = Exists(
        live_workers(now, config)
        .filter(assigned_conversation_id=OuterRef("assigned_conversation_id"))
        .exclude(pk=OuterRef("pk"))
    )
    return list(
        live_workers(now, config)
        .filter(
            load=0,
            assigned_lease_id="",
            assigned_conversation__isnull=False,
        )
        .annotate(idle_from=Coalesce("idle_since", "assigned_at", "created_at"))
        .filter(idle_from__lte=now - dt.timedelta(seconds=config.reassign_after_seconds))
        .exclude(Q(own_ready) & ~Q(shared))
        .order_by("idle_from", "pk")
        .select_for_update(skip_locked=True, of=("self",))[:limit]
    )


def reassign_idle_workers(
    waiting: list[tuple[int, str]], config: RuntimeConfig, now: dt.datetime
) -> list[str]:
    """Give the waiting conversations (pk, agent key; oldest first) to the workers idle
    longest, one each. Returns ``"<worker id>: <old pk> -> <new pk>"`` per reassignment.

    Costs one query plus two per reassignment: bounded by the fleet, not the queue.
    """
    if not waiting:
        return []
    done = []
    for worker, (conversation_pk, agent_key) in zip(
        idle_workers(config, now, len(waiting)), waiting, strict=False
    ):
        # Conditional on what was read: a claim that got in first (load, lease) wins.
        moved = Worker.objects.filter(
            pk=worker.pk,
            status=Worker.ACTIVE,
            load=0,
            assigned_lease_id="",
            assigned_conversation_id=worker.assigned_conversation_id,
        ).update(
            assigned_conversation_id=conversation_pk,
            assigned_agent_key=agent_key,
            assigned_at=now,
            idle_since=now,
            scheduled_shutdown_at=now + dt.timedelta(seconds=config.idle_timeout_seconds),
            updated_at=now,
        )
        if not moved:
            continue
        if worked_in_assignment(worker):
            begin_handoff(worker.assigned_conversation_id, worker.worker_id, now, config)
        done.append(f"{worker.worker_id}: {worker.assigned_conversation_id} -> {conversation_pk}")
    return done
