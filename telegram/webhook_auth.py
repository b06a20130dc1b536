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
from dataclasses import dataclass

from django.db import connection

from agents.models import AgentProfile, Secret
from agents.secret_refs import WEBHOOK_SECRET_PREFIX
from agents.secret_store import decrypt_secret
from telegram.models import Bot, TelegramUpdate

_PLAINTEXT_BY_ROW: dict[tuple[int, bytes], str] = {}
_PLAINTEXT_ROWS_MAX = 1000


def _columns(model, alias: str) -> tuple[list, str]:
    fields = list(model._meta.concrete_fields)
    names = ", ".join(f'{alias}."{field.column}"' for field in fields)
    return fields, names


_BOT_FIELDS, _BOT_COLUMNS = _columns(Bot, "b")
_AGENT_FIELDS, _AGENT_COLUMNS = _columns(AgentProfile, "a")
# The bot, its agent, the two newest versions of the agent's webhook secret (the active one
# and, during a rotation, the previous one) and whether the update was already recorded: one
# round trip for every update, and all a redelivery costs. The dedupe flag reads the
# (bot_identity, update_id) unique index; it is an early answer only — the guarantee is that
# unique row, written in the same transaction as the queue row.
_BOT_SQL = (
    f"SELECT {_BOT_COLUMNS}, {_AGENT_COLUMNS}, s.id, s.active, s.nonce, "  # noqa: S608
    f"EXISTS (SELECT 1 FROM {TelegramUpdate._meta.db_table} u "
    "WHERE u.bot_identity = b.bot_identity AND u.update_id = %s) "
    f"FROM {Bot._meta.db_table} b JOIN {AgentProfile._meta.db_table} a ON a.id = b.agent_id "
    f"LEFT JOIN {Secret._meta.db_table} s ON s.secret_ref = %s || a.agent_key "
    "WHERE b.bot_identity = %s ORDER BY s.version DESC LIMIT 2"
)
_SECRET_REF_PREFIX = WEBHOOK_SECRET_PREFIX


@dataclass(frozen=True)
class IngressBot:
    bot: Bot
    # (id, active, nonce) of the webhook secret's two newest versions, newest first.
    secret_rows: list[tuple[int, bool, bytes]]
    # Whether (this bot, the update id asked about) is already recorded.
    update_seen: bool = False


def load_bot(bot_identity: str, update_id: int | None = None) -> IngressBot | None:
    """The bot with its agent and webhook secret rows, as the database has them now, and
    whether ``update_id`` (if given) was already recorded for it.

    The same rows as ``Bot.objects.select_related("agent")``, read with one prepared SQL
    string because compiling that ORM query costs several times what the database spends
    answering it (bench/webhook_ingest.py); values go through the same converters the ORM
    applies, so the instances are identical.
    """
    with connection.cursor() as cursor:
        cursor.execute(_BOT_SQL, [update_id, _SECRET_REF_PREFIX, bot_identity])
        rows = cursor.fetchall()
    if not rows:
        return None
    split, end = len(_BOT_FIELDS), len(_BOT_FIELDS) + len(_AGENT_FIELDS)
    bot = _instance(Bot, _BOT_FIELDS, rows[0][:split])
    bot.agent = _instance(AgentProfile, _AGENT_FIELDS, rows[0][split:end])
    secrets = [(r[end], bool(r[end + 1]), bytes(r[end + 2])) for r in rows if r[end] is not None]
    return IngressBot(bot, secrets, update_seen=bool(rows[0][end + 3]))


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


def webhook_secret_matches(loaded: IngressBot, given: str | None, now: dt.datetime) -> bool:
    """Constant-time check of the header against the bot's currently accepted secrets.

    Raises ``SecretUnavailable`` when an accepted secret cannot be decrypted.
    """
    if not given:
        return False
    until = loaded.bot.previous_secret_valid_until
    accepted = [
        _plaintext(pk, nonce)
        for pk, active, nonce in loaded.secret_rows
        if active or (until is not None and until > now)
    ]
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
