"""The warm worker's whole claim in one round trip (SPEC §6.2), by pk or by token (its
authentication in the same round trip): the claim's lock statement and its take, guarded by
the rules the claim checks between them, sent together (``workers.sql_cursor.pipelined``).
Built of ``workers/sql_claim.py``'s statements. Twin: the claim's ordinary path
(tests/workers/test_warm_claim.py).
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from django.db import connection

from agents.models import Conversation
from workers.models import Message, Worker
from workers.sql import (
    TOKEN_OWNER_CONVERSATION,
    TOKEN_OWNER_ID,
    TOKEN_OWNER_PK,
    WITH_TOKEN_OWNER,
    _assignments,
    _owner,
    _table,
)
from workers.sql import value_sql as _value_sql
from workers.sql_claim import (
    _bound,
    _in_handoff,
    _locked_worker_sql,
    _take_columns,
    _take_sql,
    next_ready_query,
)
from workers.sql_cursor import pipelined, row_instance
from workers.sql_cursor import statement_text as _text


class WarmClaim(NamedTuple):
    worker: Worker  # as locked, with its conversation's ``c_*`` columns
    message: Message | None  # the candidate, ``taken`` or not; None when none is ready
    idle: bool  # nothing to take (none ready, none processing): the claim's answer is None


def claim_assigned(
    worker: Worker,
    conversation_id: str | None,
    now: dt.datetime,
    live_cutoff: dt.datetime,
    message_values: dict,
    worker_values: dict,
) -> WarmClaim:
    """A worker assigned to a conversation takes its next message, in one round trip on
    PostgreSQL: ``locked_worker_and_conversation``'s statement, then ``claim_next_ready``'s
    take guarded by the rules the claim checks in between (``workers.sql_cursor.pipelined``).
    When the rules hold but the conversation has nothing ready and nothing processing, the
    claim's answer is None: ``idle`` says so, and the worker's liveness is refreshed as the
    claim does when it finds nothing.

    ``worker`` is the caller's copy, assigned to ``worker.assigned_conversation_id``; the
    writes land only while the locked worker is still active, live and assigned to that
    conversation (then the first statement locked that very conversation: it locks the
    locked worker's, and the conversation existed before this claim began), the
    conversation is ``conversation_id`` when one is asked for, and no other worker's handoff
    holds it: ``lifecycle.is_stale`` and ``Conversation.in_handoff_for`` spelled in SQL, as
    ``claimable_conversations_query`` spells them. The second statement sees every earlier
    claim, as ``claim_next_ready`` does, because it starts after the lock.

    Only where ``can_pipeline()``. Twin (and the path elsewhere): ``claim.claim_next_job``'s
    transaction, which the caller falls back to whenever this neither took nor found idle.
    """
    lock = _text(_locked_worker_sql)
    return _claim_assigned(
        (worker.pk, worker.assigned_conversation_id, worker.worker_id),
        (lock, [worker.pk]),
        conversation_id,
        now,
        live_cutoff,
        message_values,
        worker_values,
    )


def claim_assigned_by_token(
    token,
    conversation_id: str | None,
    now: dt.datetime,
    live_cutoff: dt.datetime,
    message_values: dict,
    worker_values: dict,
) -> WarmClaim | None:
    """``claim_assigned`` for the worker owning ``token`` (a ``workers.tokens.WorkerToken``),
    its authentication in the same round trip: both statements find the token's owner
    themselves (``workers.sql.TOKEN_OWNER``; the first locks it, so the second finds the
    same worker) and name it where ``claim_assigned`` has its pk, its conversation and its
    ``worker_id`` (``message_values`` and ``worker_values`` name them by ``OwnerColumn``).
    None when the token has no owner: nothing was written or locked.

    Twin (and the path elsewhere): ``tokens.owner(token)``, then ``claim_assigned``.
    """
    lock = _text(_locked_worker_sql, True)
    return _claim_assigned(
        (TOKEN_OWNER_PK, TOKEN_OWNER_CONVERSATION, TOKEN_OWNER_ID),
        (lock, [token.prefix, token.digest]),
        conversation_id,
        now,
        live_cutoff,
        message_values,
        worker_values,
        token=token,
    )


def _claim_assigned(
    who, lock, conversation_id, now, live_cutoff, message_values, worker_values, token=None
) -> WarmClaim | None:
    """``who``: the worker's pk, its conversation's pk and its ``worker_id`` (values, or
    ``OwnerColumn`` of ``me`` by ``token``); ``lock``: the lock statement and parameters."""
    pk, conversation_pk, worker_id = who
    candidate, candidate_params = next_ready_query(pk, conversation_pk, now, live_cutoff)
    message_set, message_params = _assignments(Message, message_values)
    worker_set, worker_params = _assignments(Worker, worker_values)
    asked = conversation_id is not None
    owners = tuple(_owner(value) for value in who)
    take = _text(_claim_assigned_sql, candidate, message_set, worker_set, asked, owners)
    when = Message._meta.get_field("scheduled_for").get_db_prep_value
    now_param = when(now, connection)
    params = [token.prefix, token.digest] if token else []
    params += candidate_params
    params += _bound(pk, when(live_cutoff, connection), conversation_pk)
    params += [conversation_id] if asked else []
    params += _bound(now_param, worker_id)
    params += message_params + worker_params + _bound(pk)
    params += _bound(now_param, pk, conversation_pk)
    lock_sql, lock_params = lock
    lock_cursor, take_cursor = pipelined((lock_sql, lock_params), (take, params))
    locked_worker = row_instance(lock_cursor, Worker, lock_sql)
    if locked_worker is None:
        if token:
            return None
        raise Worker.DoesNotExist(f"No Worker with id {pk}.")
    row = row_instance(take_cursor, Message, take)
    return WarmClaim(locked_worker, row if row.pk is not None else None, row.idle)


def _claim_assigned_sql(
    candidate: str, message_set: str, worker_set: str, asked: bool, owners: tuple = (None,) * 3
) -> str:
    """``owners``: the worker's pk, its conversation and its ``worker_id`` as columns of
    ``me`` (by token), or None each for a parameter."""
    quote = connection.ops.quote_name
    pk, conversation, worker_id = (_value_sql(owner) for owner in owners)
    me = f"{WITH_TOKEN_OWNER}, " if owners[0] else ""
    fit = (
        f"SELECT 1 FROM {_table(Worker)} w "  # noqa: S608 (names and constants, never input)
        f"JOIN {quote(Conversation._meta.db_table)} c ON c.id = w.assigned_conversation_id "
        f"WHERE w.id = {pk} AND w.status = '{Worker.ACTIVE}' "
        f"AND COALESCE(w.heartbeat_at, w.created_at) >= %s AND c.id = {conversation} "
        f"{'AND c.conversation_id = %s ' if asked else ''}"
        f"AND {_in_handoff(worker_id)} IS NOT TRUE"
    )
    return (
        f"WITH {me}candidate AS ({candidate}), fit AS ({fit}), "  # noqa: S608
        f"{_take_sql(message_set, worker_set, guarded=True, pk=pk)}, "
        f"idle AS (UPDATE {_table(Worker)} SET heartbeat_at = %s WHERE id = {pk} "
        "AND EXISTS (SELECT 1 FROM fit) AND NOT EXISTS (SELECT 1 FROM candidate) "
        f"AND NOT EXISTS (SELECT 1 FROM {_table(Message)} p WHERE p.conversation_id = "
        f"{conversation} AND p.status = '{Message.PROCESSING}') RETURNING 1) "
        f"SELECT {_take_columns()}, EXISTS (SELECT 1 FROM idle) AS idle "
        "FROM (SELECT 1) AS one LEFT JOIN candidate ON true"
    )
