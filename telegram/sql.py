"""The telegram app's raw-SQL fast paths, all in one room (ARCHITECTURE.md).

Each runs on every webhook update, where compiling the equivalent ORM query costs several
times what the database spends answering it (bench/webhook_ingest.py). Every function here
has a QuerySet twin in tests/telegram/test_sql.py that must give the same answer on the same
data, on SQLite and on PostgreSQL; names come from the models' metadata, values are always
parameters.
"""

from __future__ import annotations

from agents.models import AgentProfile, Conversation, Secret
from agents.secret_refs import WEBHOOK_SECRET_PREFIX
from telegram.models import Bot, IdentityBinding, SenderQuota, TelegramUpdate
from workers.models import Message
from workers.sql_cursor import instance_from_row, prepared_cursor


def _columns(model, alias: str) -> tuple[list, str]:
    fields = list(model._meta.concrete_fields)
    names = ", ".join(f'{alias}."{field.column}"' for field in fields)
    return fields, names


# The bot of an update --------------------------------------------------------------------------

_BOT_FIELDS, _BOT_COLUMNS = _columns(Bot, "b")
_AGENT_FIELDS, _AGENT_COLUMNS = _columns(AgentProfile, "a")
# The bot, its agent, the two newest versions of the agent's webhook secret (the active one
# and, during a rotation, the previous one), whether the update was already recorded and the
# sender's active binding on this bot: one round trip for every update, and all a
# redelivery costs. The dedupe flag reads the (bot_identity, update_id) unique index; the
# binding is the same newest-active read as ``active_binding_id``.
_BOT_SQL = (
    f"SELECT {_BOT_COLUMNS}, {_AGENT_COLUMNS}, s.id, s.active, s.nonce, "  # noqa: S608
    f"EXISTS (SELECT 1 FROM {TelegramUpdate._meta.db_table} u "
    "WHERE u.bot_identity = b.bot_identity AND u.update_id = %s), "
    f"(SELECT ib.id FROM {IdentityBinding._meta.db_table} ib "
    "WHERE ib.status = %s AND ib.bot_identity = b.bot_identity "
    "AND ib.telegram_user_id = %s ORDER BY ib.bound_at DESC LIMIT 1) "
    f"FROM {Bot._meta.db_table} b JOIN {AgentProfile._meta.db_table} a ON a.id = b.agent_id "
    f"LEFT JOIN {Secret._meta.db_table} s ON s.secret_ref = %s || a.agent_key "
    "WHERE b.bot_identity = %s ORDER BY s.version DESC LIMIT 2"
)
_SECRET_REF_PREFIX = WEBHOOK_SECRET_PREFIX


def bot_with_secrets(
    bot_identity: str, update_id: int | None, telegram_user_id: str | None = None
) -> tuple[Bot, list[tuple[int, bool, bytes]], bool, int | None] | None:
    """(bot with its agent, (id, active, nonce) of the webhook secret's two newest versions,
    newest first, whether ``update_id`` is recorded for the bot, the id of the newest active
    binding of (bot, ``telegram_user_id``) or None), or None for no such bot.

    The instances are those of ``Bot.objects.select_related("agent")``: values go through
    the converters the ORM applies.
    """
    params = [update_id, IdentityBinding.ACTIVE, telegram_user_id, _SECRET_REF_PREFIX]
    with prepared_cursor() as cursor:
        cursor.execute(_BOT_SQL, [*params, bot_identity])
        rows = cursor.fetchall()
    if not rows:
        return None
    split, end = len(_BOT_FIELDS), len(_BOT_FIELDS) + len(_AGENT_FIELDS)
    bot = instance_from_row(Bot, _BOT_FIELDS, rows[0][:split])
    bot.agent = instance_from_row(AgentProfile, _AGENT_FIELDS, rows[0][split:end])
    secrets = [(r[end], bool(r[end + 1]), bytes(r[end + 2])) for r in rows if r[end] is not None]
    return bot, secrets, bool(rows[0][end + 3]), rows[0][end + 4]


# Whether an update is recorded ----------------------------------------------------------------

_SEEN_SQL = (
    f"SELECT 1 FROM {TelegramUpdate._meta.db_table} "  # noqa: S608 (names, not input)
    "WHERE bot_identity = %s AND update_id = %s LIMIT 1"
)


def update_seen(bot_identity: str, update_id: int) -> bool:
    """Whether (bot, update id) is recorded; reads the unique index."""
    with prepared_cursor() as cursor:
        cursor.execute(_SEEN_SQL, [bot_identity, update_id])
        return cursor.fetchone() is not None


# The binding of a sender ------------------------------------------------------------------------

_BINDING_SQL = (
    f"SELECT id FROM {IdentityBinding._meta.db_table} "  # noqa: S608 (names, not input)
    "WHERE status = %s AND bot_identity = %s AND telegram_user_id = %s "
    "ORDER BY bound_at DESC LIMIT 1"
)


def active_binding_id(bot_identity: str, telegram_user_id: str) -> int | None:
    """The id of the newest active binding of (bot, Telegram user), or None."""
    with prepared_cursor() as cursor:
        cursor.execute(_BINDING_SQL, [IdentityBinding.ACTIVE, bot_identity, telegram_user_id])
        row = cursor.fetchone()
    return row[0] if row else None


# The sender's token bucket (telegram.quotas) ----------------------------------------------------

_QUOTA_TABLE = SenderQuota._meta.db_table


def _available(table: str) -> str:
    """SQL for the tokens the stored bucket holds at %(now)s: refilled, capped at burst.
    Portable CASE instead of LEAST/GREATEST (SQLite has neither)."""
    elapsed = (
        f"(CASE WHEN %(now)s > {table}.refilled_at THEN %(now)s - {table}.refilled_at ELSE 0 END)"
    )
    refilled = f"({table}.tokens + %(per_second)s * {elapsed})"
    return f"(CASE WHEN {refilled} < %(burst)s THEN {refilled} ELSE %(burst)s END)"


_AVAILABLE = _available(_QUOTA_TABLE)
# One statement: a new sender starts with a full bucket less this message; a known one is
# refilled for the time since its last message and pays one token if it has one. Every SET
# expression reads the old row, and RETURNING reports the decision.
_TAKE_TOKEN_SQL = (
    f"INSERT INTO {_QUOTA_TABLE} "  # noqa: S608 (names, not input)
    "(bot_identity, telegram_user_id, tokens, refilled_at, admitted) "
    "VALUES (%(bot)s, %(user)s, %(burst)s - 1, %(now)s, %(yes)s) "
    "ON CONFLICT (bot_identity, telegram_user_id) DO UPDATE SET "
    f"tokens = CASE WHEN {_AVAILABLE} >= 1 THEN {_AVAILABLE} - 1 ELSE {_AVAILABLE} END, "
    f"admitted = CASE WHEN {_AVAILABLE} >= 1 THEN %(yes)s ELSE %(no)s END, "
    # A clock that stepped back never refills twice.
    f"refilled_at = CASE WHEN %(now)s > {_QUOTA_TABLE}.refilled_at "
    f"THEN %(now)s ELSE {_QUOTA_TABLE}.refilled_at END "
    "RETURNING admitted"
)


def take_token(
    bot_identity: str, user_id: str, *, burst: float, per_second: float, now: float
) -> bool:
    """Refill the sender's bucket to ``now`` and take one token; False when it had none
    (the bucket is then left refilled, and nothing is taken)."""
    params = {
        "bot": bot_identity,
        "user": user_id,
        "burst": float(burst),
        "per_second": float(per_second),
        "now": now,
        "yes": True,
        "no": False,
    }
    with prepared_cursor() as cursor:
        cursor.execute(_TAKE_TOKEN_SQL, params)
        return bool(cursor.fetchone()[0])


# A conversation's waiting messages ---------------------------------------------------------------

# Reads at most `cap` rows off the (conversation, status) index, however long the queue.
_WAITING_SQL = (
    "SELECT COUNT(*) FROM (SELECT 1 FROM "  # noqa: S608 (names, not input)
    f"{Message._meta.db_table} m JOIN {Conversation._meta.db_table} c "
    "ON c.id = m.conversation_id "
    "WHERE c.conversation_id = %s AND m.status IN (%s, %s) LIMIT %s) waiting"
)


def waiting_at_least(conversation_id: str, cap: int) -> bool:
    """Whether the conversation has ``cap`` or more queued or processing messages."""
    with prepared_cursor() as cursor:
        cursor.execute(_WAITING_SQL, [conversation_id, Message.QUEUED, Message.PROCESSING, cap])
        return cursor.fetchone()[0] >= cap
