"""The INSERT … SELECT of broadcast targets picks the same users as its ORM twin."""

from __future__ import annotations

from django.utils import timezone

from agents.models import AgentProfile
from agents.pushing import target_sql, targets
from agents.pushing.models import PushBroadcast, PushBroadcastDispatch

FIELDS = targets.TARGET_FIELDS


def test_the_sql_fast_path_matches_the_orm(alpha_agent, beta_agent, bind):
    gamma = AgentProfile.objects.create(agent_key="gamma", enabled=False)
    for user in ("a1", "a2"):
        bind(user, alpha_agent)
    bind("a3", alpha_agent, chat=None)
    bind("gone", alpha_agent, status="revoked")
    bind("b1", beta_agent)
    bind("g1", gamma)
    legacy = bind("legacy", alpha_agent)
    legacy.bot_identity = None
    legacy.save()
    first, second = PushBroadcast.objects.bulk_create(
        [PushBroadcast(text="x"), PushBroadcast(text="y")]
    )
    pairs = [(first.pk, alpha_agent.pk), (first.pk, gamma.pk), (second.pk, beta_agent.pk)]
    assert target_sql.insert_broadcast_targets(pairs, timezone.now()) == 5
    for broadcast, agents in ((first, [alpha_agent.pk, gamma.pk]), (second, [beta_agent.pk])):
        stored = sorted(
            PushBroadcastDispatch.objects.filter(broadcast=broadcast).values_list(*FIELDS)
        )
        twin = sorted(tuple(t[f] for f in FIELDS) for t in targets.bindings_of_agents(agents))
        assert stored == twin and stored
    assert set(PushBroadcastDispatch.objects.values_list("status", flat=True)) == {"pending"}
    assert PushBroadcastDispatch.objects.get(consumer_user_id="legacy").bot_identity == ""
