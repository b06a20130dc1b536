"""Which bot an update is for, and whether its secret header is one we accept (SPEC §5.3 step 1).

Both answers are read from the database on every update: a bot replaced, a secret rotated
or an agent disabled in another process applies from the very next update (SPEC §5.3, last
paragraph). The only thing kept in memory is the plaintext of one encryption of a secret
row, keyed by its row id and random nonce: an import writes a new row and a re-encryption a
new nonce, so the cache saves decryptions but never decides which secret is accepted.
"""

from __future__ import annotations

import datetime as dt
import hmac

from django.db import connection

from agents.models import AgentProfile, Secret
from agents.secret_store import decrypt_secret
from telegram.models import Bot, webhook_secret_ref

_PLAINTEXT_BY_ROW: dict[tuple[int, bytes], str] = {}
_PLAINTEXT_ROWS_MAX = 1000

# The two newest versions of the agent's webhook secret (the active one and, during a
# rotation, the previous one). Written as SQL: it runs for every update.
_SECRET_ROWS_SQL = (
    f"SELECT id, active, nonce FROM {Secret._meta.db_table} "  # noqa: S608 (names, not input)
    "WHERE secret_ref = %s ORDER BY version DESC LIMIT 2"
)


def _columns(model, alias: str) -> tuple[list, str]:
    fields = list(model._meta.concrete_fields)
    names = ", ".join(f'{alias}."{field.column}"' for field in fields)
    return fields, names


_BOT_FIELDS, _BOT_COLUMNS = _columns(Bot, "b")
_AGENT_FIELDS, _AGENT_COLUMNS = _columns(AgentProfile, "a")
_BOT_SQL = (
    f"SELECT {_BOT_COLUMNS}, {_AGENT_COLUMNS} FROM {Bot._meta.db_table} b "  # noqa: S608
    f"JOIN {AgentProfile._meta.db_table} a ON a.id = b.agent_id WHERE b.bot_identity = %s"
)


def load_bot(bot_identity: str) -> Bot | None:
    """The bot with its agent, as the database has it now (one query, every update).

    The same rows as ``Bot.objects.select_related("agent")``, read with one prepared SQL
    string because compiling that ORM query costs several times what the database spends
    answering it (bench/webhook_ingest.py); values go through the same converters the ORM
    applies, so the instances are identical.
    """
    with connection.cursor() as cursor:
        cursor.execute(_BOT_SQL, [bot_identity])
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(_BOT_FIELDS)
    bot = _instance(Bot, _BOT_FIELDS, row[:split])
    bot.agent = _instance(AgentProfile, _AGENT_FIELDS, row[split:])
    return bot


_CONVERTERS: dict[tuple[str, type], list] = {}


def _converters(model, fields: list) -> list:
    """Per field, its column and the converters the ORM would apply (computed once)."""
    key = (connection.vendor, model)
    if key not in _CONVERTERS:
        plan = []
        for field in fields:
            col = field.get_col(model._meta.db_table)
            steps = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
            plan.append((col, steps))
        _CONVERTERS[key] = plan
    return _CONVERTERS[key]


def _instance(model, fields: list, values):
    converted = []
    for (col, steps), value in zip(_converters(model, fields), values, strict=True):
        for convert in steps:
            value = convert(value, col, connection)
        converted.append(value)
    return model.from_db(connection.alias, [f.attname for f in fields], converted)


def webhook_secret_matches(bot: Bot, given: str | None, now: dt.datetime) -> bool:
    """Constant-time check of the header against the bot's currently accepted secrets.

    Raises ``SecretUnavailable`` when an accepted secret cannot be decrypted.
    """
    if not given:
        return False
    with connection.cursor() as cursor:
        cursor.execute(_SECRET_ROWS_SQL, [webhook_secret_ref(bot.agent.agent_key)])
        rows = cursor.fetchall()
    accepted = []
    for pk, active, nonce in rows:
        if active or (bot.previous_secret_valid_until and bot.previous_secret_valid_until > now):
            accepted.append(_plaintext(pk, bytes(nonce)))
    return secret_matches(given, accepted)


def _plaintext(pk: int, nonce: bytes) -> str:
    value = _PLAINTEXT_BY_ROW.get((pk, nonce))
    if value is None:
        value = decrypt_secret(Secret.objects.get(pk=pk))
        if len(_PLAINTEXT_BY_ROW) >= _PLAINTEXT_ROWS_MAX:
            _PLAINTEXT_BY_ROW.clear()
        _PLAINTEXT_BY_ROW[(pk, nonce)] = value
    return value


def secret_matches(given: str | None, accepted: list[str]) -> bool:
    if not given:
        return False
    matched = False
    for candidate in accepted:  # compare with every candidate: timing reveals nothing
        matched |= hmac.compare_digest(given.encode(), candidate.encode())
    return matched
