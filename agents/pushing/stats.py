"""Stats of one user's agent (SPEC §14 "stats per user agent"): push jobs and dispatches,
and the conversation's history and queue — what the original answered in
``getUserAgentUsageStats``, keyed by tenant. One place for the API and any other caller."""

from __future__ import annotations

from django.db.models import Count

from agents.models import AgentProfile, ConversationEntry
from agents.pushing.services import push_stats
from telegram.models import IdentityBinding
from workers.models import Message

WAITING = ("queued", "processing")
FAILED = ("failed", "dead_letter")


def user_agent_stats(consumer_user_id: str, agent: AgentProfile) -> dict:
    """Push figures of the tenant's user (their jobs follow their binding) with dispatches
    to this agent, and the figures of the user's latest conversation with this agent
    (zeros when they were never bound to it)."""
    stats = push_stats(consumer_user_id, agent.agent_key, agent.tenant_id)
    binding = (
        IdentityBinding.objects.filter(
            tenant_id=agent.tenant_id, consumer_user_id=consumer_user_id, agent=agent
        )
        .order_by("-bound_at", "-id")
        .first()
    )
    by_status = {}
    entries = 0
    if binding is not None:
        conversation = {
            "conversation__conversation_id": binding.conversation_id,
            "conversation__agent": agent,
        }
        by_status = dict(
            Message.objects.filter(**conversation).values_list("status").annotate(n=Count("id"))
        )
        entries = ConversationEntry.objects.filter(**conversation).count()
    return {
        "consumer_user_id": consumer_user_id,
        "agent_key": agent.agent_key,
        "binding_status": binding.status if binding else None,
        "conversation_id": binding.conversation_id if binding else None,
        **stats,
        "context_messages": entries,
        "queued_messages": sum(by_status.get(s, 0) for s in WAITING),
        "failed_messages": sum(by_status.get(s, 0) for s in FAILED),
        "done_messages": by_status.get("done", 0),
    }
