"""Every raw-SQL fast path of ``telegram.sql`` against its QuerySet twin: the same data gives
the same answer (the suite runs on SQLite and on PostgreSQL)."""

from __future__ import annotations

import pytest
from django.db import transaction

from agents.models import AgentProfile, Conversation, Secret
from agents.secret_store import import_secret
from telegram import sql, sql_admit
from telegram.models import Bot, IdentityBinding, SenderQuota, TelegramUpdate, webhook_secret_ref
from tests.telegram.conftest import bind
from workers.models import Message
from workers.queue import EnqueueError, enqueue_message

pytestmark = pytest.mark.django_db


def values(instance) -> list:
    return [getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields]


def bot_with_secrets_twin(bot_identity: str, update_id: int | None, user_id: str | None = None):
    bot = Bot.objects.select_related("agent").filter(bot_identity=bot_identity).first()
    if bot is None:
        return None
    rows = Secret.objects.filter(secret_ref=webhook_secret_ref(bot.agent.agent_key)).order_by(
        "-version"
    )[:2]
    secrets = [(row.pk, row.active, bytes(row.nonce)) for row in rows]
    seen = TelegramUpdate.objects.filter(bot_identity=bot_identity, update_id=update_id).exists()
    binding = active_binding_twin(bot_identity, user_id) if user_id is not None else None
    return bot, secrets, seen, binding


def assert_same_bot(bot_identity: str, update_id: int | None, user_id: str | None = None) -> None:
    fast = sql.bot_with_secrets(bot_identity, update_id, user_id)
    twin = bot_with_secrets_twin(bot_identity, update_id, user_id)
    if twin is None:
        assert fast is None
        return
    assert values(fast[0]) == values(twin[0])
    assert values(fast[0].agent) == values(twin[0].agent)
    assert fast[1:] == twin[1:]


def test_bot_with_secrets_matches_its_queryset_twin(make_bot):
    assert_same_bot("100", 1)  # no bot at all
    bot = make_bot("alpha", "100", require_telegram_binding=True)
    make_bot("beta", "200")
    AgentProfile.objects.filter(pk=bot.agent.pk).update(secrets_ref=["llm.key"])
    for update_id in (None, 1, 2):
        assert_same_bot("100", update_id)
    TelegramUpdate.objects.create(bot_identity="100", update_id=1, outcome="enqueued")
    TelegramUpdate.objects.create(bot_identity="200", update_id=2, outcome="enqueued")
    for update_id in (1, 2, 3):  # seen on this bot, seen on another bot only, never seen
        assert_same_bot("100", update_id)
    # A rotation: three versions, the newest active; only the two newest are read.
    import_secret(webhook_secret_ref("alpha"), "n" * 40, actor="t")
    import_secret(webhook_secret_ref("alpha"), "m" * 40, actor="t")
    assert len(sql.bot_with_secrets("100", 1)[1]) == 2
    assert_same_bot("100", 1)
    # A bot whose webhook secret was never stored.
    Secret.objects.filter(secret_ref=webhook_secret_ref("beta")).delete()
    assert sql.bot_with_secrets("200", 2)[1] == []
    assert_same_bot("200", 2)


def test_bot_with_secrets_reads_the_senders_binding_as_its_twin(make_bot):
    from tests.telegram.conftest import legacy_binding

    bot = make_bot("alpha", "100")
    other = make_bot("beta", "200")
    bind(bot, "u1", user="9")
    bind(bot, "u2", user="9")  # revokes u1's: the newest active one is read
    bind(other, "u3", user="8")  # another bot's binding of a sender
    bind(bot, "u4", chat="10")  # chat only: never matches a user
    legacy_binding(bot.agent, "u5", telegram_user_id="11")
    for user_id in ("9", "8", "10", "11", "12", None):
        for bot_identity in ("100", "200"):
            assert_same_bot(bot_identity, 1, user_id)
    assert sql.bot_with_secrets("100", 1, "9")[3] is not None
    assert sql.bot_with_secrets("100", 1, None)[3] is None


def test_update_seen_matches_its_queryset_twin(make_bot):
    TelegramUpdate.objects.create(bot_identity="100", update_id=7, outcome="ignored")
    TelegramUpdate.objects.create(bot_identity="200", update_id=8, outcome="ignored")
    for bot_identity in ("100", "200", "300"):
        for update_id in (7, 8, -(2**63), 2**63 - 1):
            twin = TelegramUpdate.objects.filter(
                bot_identity=bot_identity, update_id=update_id
            ).exists()
            assert sql.update_seen(bot_identity, update_id) == twin


def active_binding_twin(bot_identity: str, user_id: str) -> int | None:
    return (
        IdentityBinding.objects.filter(
            status=IdentityBinding.ACTIVE, bot_identity=bot_identity, telegram_user_id=user_id
        )
        .order_by("-bound_at")
        .values_list("pk", flat=True)
        .first()
    )


def test_active_binding_id_matches_its_queryset_twin(make_bot):
    from tests.telegram.conftest import legacy_binding

    bot = make_bot("alpha", "100")
    other = make_bot("beta", "200")
    bind(bot, "u1", user="9")
    bind(bot, "u2", user="9")  # revokes u1's: (bot, user) maps to one consumer
    bind(other, "u3", user="9")
    bind(bot, "u4", chat="10")  # chat only: never matches a user
    legacy_binding(bot.agent, "u5", telegram_user_id="11")
    cases = [("100", "9"), ("200", "9"), ("100", "10"), ("100", "11"), ("300", "9")]
    for bot_identity, user_id in cases:
        assert sql.active_binding_id(bot_identity, user_id) == active_binding_twin(
            bot_identity, user_id
        )
    assert sql.active_binding_id("100", "9") is not None


def take_token_twin(bot_identity: str, user_id: str, *, burst, per_second, now) -> bool:
    """The token bucket spelled with the ORM: a locked read, then a write."""
    with transaction.atomic():
        row = (
            SenderQuota.objects.select_for_update()
            .filter(bot_identity=bot_identity, telegram_user_id=user_id)
            .first()
        )
        if row is None:
            SenderQuota.objects.create(
                bot_identity=bot_identity,
                telegram_user_id=user_id,
                tokens=burst - 1,
                refilled_at=now,
                admitted=True,
            )
            return True
        available = min(burst, row.tokens + per_second * max(0.0, now - row.refilled_at))
        row.admitted = available >= 1
        row.tokens = available - 1 if row.admitted else available
        row.refilled_at = max(now, row.refilled_at)
        row.save()
        return row.admitted


def test_take_token_matches_its_queryset_twin():
    # A burst, a refusal, a partial refill, a full refill capped at burst, a clock that
    # steps back (never refills twice).
    times = [0.0, 0.0, 0.0, 0.0, 1.0, 1.5, 2.0, 2.0, 60.0, 61.0, 30.0, 30.5, 62.0]
    limits = {"burst": 3, "per_second": 0.5}
    for now in times:
        fast = sql.take_token("100", "fast", now=now, **limits)
        twin = take_token_twin("100", "twin", now=now, **limits)
        assert fast == twin, now
        a, b = (SenderQuota.objects.get(telegram_user_id=u) for u in ("fast", "twin"))
        assert (a.tokens, a.refilled_at, a.admitted) == pytest.approx(
            (b.tokens, b.refilled_at, b.admitted)
        )


def test_waiting_at_least_matches_its_queryset_twin(db):
    AgentProfile.objects.create(agent_key="alpha")
    payload = {"provider": "telegram", "provider_user_id": "1", "message_text": "hi"}
    ids = [
        enqueue_message(conversation_id="c1", agent_key="alpha", payload=payload).message.pk
        for _ in range(5)
    ]
    enqueue_message(conversation_id="c2", agent_key="alpha", payload=payload)
    Message.objects.filter(pk=ids[0]).update(status=Message.PROCESSING)
    Message.objects.filter(pk=ids[1]).update(status=Message.DONE)
    Message.objects.filter(pk=ids[2]).update(status=Message.DEAD_LETTER)
    for conversation_id in ("c1", "c2", "none"):
        waiting = Message.objects.filter(
            conversation__conversation_id=conversation_id,
            status__in=[Message.QUEUED, Message.PROCESSING],
        ).count()
        for cap in range(1, 6):
            assert sql.waiting_at_least(conversation_id, cap) == (waiting >= cap)


# enqueue_under_cap: one statement on PostgreSQL, its steps everywhere else -------------------


def _prepared(conversation_id: str, agent: AgentProfile, text: str = "hi"):
    from workers.queue import prepare_enqueue

    return prepare_enqueue(
        conversation_id=conversation_id,
        agent_key=agent.agent_key,
        payload={
            "provider": "telegram",
            "provider_user_id": " 7 ",
            "message_text": text,
            "metadata": {"update_id": "1"},
            "raw_update": {"update_id": 1, "message": {"text": text}},
            "external_message_id": "5",
        },
        priority=60,
        agent=agent,
    )


def _written(conversation_id: str, update_id: int):
    """What an enqueue wrote, without ids and the names that differ between the two runs."""
    skip = {"id", "conversation_id", "update_id", "message_id", "created_at", "updated_at"}
    skip |= {"scheduled_for", "received_at"}  # the time of each run

    def plain(instance):
        return {
            f.attname: getattr(instance, f.attname)
            for f in type(instance)._meta.concrete_fields
            if f.attname not in skip
        }

    conversation = Conversation.objects.filter(conversation_id=conversation_id).first()
    rows = list(Message.objects.filter(conversation=conversation).order_by("id"))
    row = TelegramUpdate.objects.filter(update_id=update_id).first()
    return (
        plain(conversation) if conversation else None,
        [plain(m) for m in rows],
        (plain(row), row.message_id == rows[-1].pk) if row else None,
    )


def _run(function, conversation_id: str, agent, cap: int, update_id: int):
    row = TelegramUpdate(bot_identity="100", update_id=update_id, outcome="enqueued")
    try:
        with transaction.atomic():
            message = function(_prepared(conversation_id, agent), cap, row)
    except EnqueueError as exc:
        return ("refused", str(exc).replace(conversation_id, "<c>")), _written(
            conversation_id, update_id
        )
    if message is None:
        return ("throttled",), _written(conversation_id, update_id)
    stored = Message.objects.get(pk=message.pk)
    assert values(stored) == values(message)  # the instance is the row
    assert TelegramUpdate.objects.get(pk=row.pk).message_id == message.pk
    return ("enqueued",), _written(conversation_id, update_id)


@pytest.mark.parametrize(
    "waiting, finished, owner, cap",
    [
        (None, 0, "alpha", 3),  # a new conversation
        (0, 2, "alpha", 1),  # finished messages do not count
        (2, 0, "alpha", 3),  # under the cap
        (3, 0, "alpha", 3),  # at the cap: refused, nothing written
        (5, 1, "alpha", 3),  # past it
        (0, 0, "beta", 3),  # another agent's conversation
        (3, 0, "beta", 3),  # another agent's and full: the cap answers first
    ],
)
def test_enqueue_under_cap_matches_its_steps(db, waiting, finished, owner, cap):
    from workers.queue import enqueue_message

    alpha = AgentProfile.objects.create(agent_key="alpha")
    AgentProfile.objects.create(agent_key="beta")
    answers = []
    functions = [sql_admit.enqueue_under_cap, sql_admit._enqueue_under_cap_in_steps]
    for n, function in enumerate(functions):
        conversation_id = f"telegram:100:{n}"
        payload = {"provider": "telegram", "provider_user_id": "1", "message_text": "x"}
        if waiting is not None:
            ids = [
                enqueue_message(
                    conversation_id=conversation_id, agent_key=owner, payload=payload
                ).message.pk
                for _ in range(waiting + finished)
            ]
            Message.objects.filter(pk__in=ids[:1]).update(status=Message.PROCESSING)
            Message.objects.filter(pk__in=ids[waiting:]).update(status=Message.DONE)
        answers.append(_run(function, conversation_id, alpha, cap, update_id=1000 + n))
    assert answers[0] == answers[1]
    if answers[0][0] == ("enqueued",):
        assert answers[0][1][2] is not None


def test_enqueue_under_cap_fails_on_a_recorded_update_as_its_steps(db):
    from django.db import IntegrityError

    alpha = AgentProfile.objects.create(agent_key="alpha")
    TelegramUpdate.objects.create(bot_identity="100", update_id=1, outcome="enqueued")
    for function in (sql_admit.enqueue_under_cap, sql_admit._enqueue_under_cap_in_steps):
        row = TelegramUpdate(bot_identity="100", update_id=1, outcome="enqueued")
        with pytest.raises(IntegrityError), transaction.atomic():
            function(_prepared("telegram:100:1", alpha), 3, row)
        assert not Message.objects.exists() and not Conversation.objects.exists()


def test_enqueue_under_cap_requests_a_reconcile_after_commit(
    db, django_capture_on_commit_callbacks
):
    from workers import triggers

    alpha = AgentProfile.objects.create(agent_key="alpha")
    row = TelegramUpdate(bot_identity="100", update_id=1, outcome="enqueued")
    with django_capture_on_commit_callbacks() as callbacks:
        sql_admit.enqueue_under_cap(_prepared("telegram:100:1", alpha), 3, row)
    assert triggers.request_reconcile in callbacks


# admit_at_once: the common update in one statement (PostgreSQL), else nothing -----------------

LIMITS = {"burst": 3.0, "per_second": 0.0, "cap": 2, "now": 1000.0}


def _admit(agent, conversation_id: str, user_id: str, update_id: int, **limits):
    row = TelegramUpdate(bot_identity="100", update_id=update_id, outcome="enqueued")
    with transaction.atomic():
        message = sql_admit.admit_at_once(
            _prepared(conversation_id, agent), row, user_id=user_id, **{**LIMITS, **limits}
        )
    return message, row


def _admit_in_steps(agent, conversation_id: str, user_id: str, update_id: int):
    row = TelegramUpdate(bot_identity="100", update_id=update_id, outcome="enqueued")
    with transaction.atomic():
        assert sql.take_token("100", user_id, burst=3.0, per_second=0.0, now=LIMITS["now"])
        message = sql_admit.enqueue_under_cap(_prepared(conversation_id, agent), LIMITS["cap"], row)
    return message, row


def _bucket(user_id: str):
    return (
        SenderQuota.objects.filter(telegram_user_id=user_id)
        .values_list("tokens", "refilled_at", "admitted")
        .first()
    )


def test_admit_at_once_writes_what_its_steps_write(db):
    from django.db import connection

    alpha = AgentProfile.objects.create(agent_key="alpha")
    for n in range(2):
        Conversation.objects.create(conversation_id=f"telegram:100:{n}", agent=alpha)
    if connection.vendor != "postgresql":  # one statement needs PostgreSQL's CTE writes
        assert _admit(alpha, "telegram:100:0", "7", 1)[0] is None
        assert not Message.objects.exists() and not SenderQuota.objects.exists()
        return
    for turn in range(2):  # a new bucket, then a known one
        fast, fast_row = _admit(alpha, "telegram:100:0", "7", 10 + turn)
        twin, twin_row = _admit_in_steps(alpha, "telegram:100:1", "8", 20 + turn)
        assert fast is not None and twin is not None
        assert values(Message.objects.get(pk=fast.pk)) == values(fast)
        assert (
            _written("telegram:100:0", 10 + turn)[1:] == _written("telegram:100:1", 20 + turn)[1:]
        )
        assert TelegramUpdate.objects.get(pk=fast_row.pk).message_id == fast.pk
        assert _bucket("7") == _bucket("8")


@pytest.mark.parametrize("case", ["no token", "full", "new conversation", "other agent"])
def test_admit_at_once_writes_nothing_unless_all_is_well(db, case):
    alpha = AgentProfile.objects.create(agent_key="alpha")
    beta = AgentProfile.objects.create(agent_key="beta")
    owner = beta if case == "other agent" else alpha
    if case != "new conversation":
        Conversation.objects.create(conversation_id="telegram:100:7", agent=owner)
    payload = {"provider": "telegram", "provider_user_id": "1", "message_text": "x"}
    if case == "full":
        for _ in range(LIMITS["cap"]):
            enqueue_message(conversation_id="telegram:100:7", agent_key="alpha", payload=payload)
    if case == "no token":
        SenderQuota.objects.create(
            bot_identity="100", telegram_user_id="7", tokens=0.5, refilled_at=999.0
        )
    before = (Message.objects.count(), _bucket("7"), Conversation.objects.count())
    message, _ = _admit(alpha, "telegram:100:7", "7", 1)
    assert message is None
    assert (Message.objects.count(), _bucket("7"), Conversation.objects.count()) == before
    assert not TelegramUpdate.objects.exists()


@pytest.mark.postgres
def test_the_webhook_statements_are_prepared_after_a_few_runs_on_postgresql(make_bot):
    """Server-bound (workers.sql_cursor.prepared_cursor): PostgreSQL plans the bot lookup once per
    connection, and the prepared statement keeps giving the twin's answer."""
    from django.db import connection

    make_bot("alpha", "100")
    for update_id in range(1, 9):
        assert_same_bot("100", update_id, "9")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ["%telegram_bot%"],
        )
        assert cursor.fetchone()[0] == 1
