"""The one raw-SQL fast path of pushing: copying a broadcast's targets from the bindings in
a single INSERT … SELECT (10,000 users: one statement, no rows through Python).

Its ORM twin is ``targets.bindings_of_agents``; tests/pushing/test_target_sql.py checks
both pick the same users on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt

from django.db import connection

from agents.models import AgentProfile
from agents.pushing.models import PushBroadcastDispatch
from telegram.models import IdentityBinding


def insert_broadcast_targets(pairs: list[tuple[int, int]], created_at: dt.datetime) -> int:
    """One pending row per active binding of each (broadcast, agent) pair's agent, when
    that agent is enabled. Returns the number of rows inserted."""
    target = PushBroadcastDispatch._meta.db_table
    binding = IdentityBinding._meta.db_table
    agent = AgentProfile._meta.db_table
    # (broadcast, agent) pairs as a derived table both databases read the same way.
    mapping = " UNION ALL ".join(["SELECT %s AS broadcast_id, %s AS agent_id"] * len(pairs))
    sql = (
        f"INSERT INTO {target} (broadcast_id, tenant_id, consumer_user_id, agent_id, "  # noqa: S608 (names, not input)
        "conversation_id, telegram_user_id, telegram_chat_id, bot_identity, status, "
        "message_id, error, created_at, enqueued_at) "
        "SELECT m.broadcast_id, b.tenant_id, b.consumer_user_id, b.agent_id, b.conversation_id, "
        "b.telegram_user_id, b.telegram_chat_id, COALESCE(b.bot_identity, ''), 'pending', "
        "NULL, '', %s, NULL "
        f"FROM {binding} b JOIN {agent} a ON a.id = b.agent_id "
        f"JOIN ({mapping}) m ON m.agent_id = b.agent_id "
        "WHERE b.status = 'active' AND a.enabled"
    )
    params = [created_at, *[value for pair in pairs for value in pair]]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount
