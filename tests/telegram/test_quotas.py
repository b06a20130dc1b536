"""Quotas at the webhook door (SPEC §23, §5.3 step 6a): the sender's token bucket, the
conversation's queue cap, the recorded ``throttled`` outcome and one notice a minute."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
import time_machine
from django.db import transaction
from django.utils import timezone

from agents.models import RuntimeConfig
from telegram import quotas, sql_admit
from telegram.models import SenderQuota, TelegramUpdate
from telegram.tasks import prune_old_updates
from tests.race import run_at_once
from tests.telegram.conftest import TG, post_at_once, text_update
from workers.models import Message

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
THROTTLED = {"ok": True, "status": "throttled"}


@pytest.fixture
def tg(tg):
    tg.post(f"{TG}/bot100:TOKEN-alpha/sendMessage", json={"ok": True, "result": {}})
    return tg


def limits(**fields) -> RuntimeConfig:
    config = RuntimeConfig.get()
    for name, value in fields.items():
        setattr(config, name, value)
    config.save()
    return config


def notices(mock) -> list[dict]:
    return [
        json.loads(call.request.body)
        for call in mock.calls
        if call.request.url.endswith("/sendMessage")
    ]


def statuses(post_update, first_id: int, count: int, **kwargs) -> list[str]:
    return [
        post_update("100", text_update(first_id + n, f"m{first_id + n}", **kwargs)).json()["status"]
        for n in range(count)
    ]


def test_defaults_are_those_of_the_spec(db):
    config = RuntimeConfig.get()
    assert (config.user_rate_per_minute, config.user_burst, config.conversation_queue_cap) == (
        20,
        10,
        20,
    )


def test_bucket_admits_the_burst_then_the_rate(make_bot, post_update):
    make_bot("alpha", "100")  # defaults: 20/min, burst 10, queue cap 20
    with time_machine.travel(T0, tick=False) as clock:
        assert statuses(post_update, 1, 11) == ["enqueued"] * 10 + ["throttled"]
        clock.shift(2.9)  # 20/min is one token every 3 s
        assert statuses(post_update, 20, 1) == ["throttled"]
        clock.shift(0.2)
        assert statuses(post_update, 30, 2) == ["enqueued", "throttled"]
    assert Message.objects.count() == 11
    throttled = TelegramUpdate.objects.filter(outcome="throttled")
    assert throttled.count() == 3
    assert "over 20 messages/min" in throttled.first().detail


def test_throttled_update_is_recorded_so_redelivery_is_a_duplicate(make_bot, post_update):
    make_bot("alpha", "100")
    limits(user_burst=1, user_rate_per_minute=1)
    with time_machine.travel(T0, tick=False) as clock:
        assert post_update("100", text_update(1, "a")).json()["status"] == "enqueued"
        assert post_update("100", text_update(2, "b")).json() == THROTTLED
        clock.shift(120)  # the bucket is full again, yet update 2 stays refused
        assert post_update("100", text_update(2, "b")).json() == {
            "ok": True,
            "status": "duplicate",
        }
    assert TelegramUpdate.objects.get(update_id=2).outcome == "throttled"
    assert list(Message.objects.values_list("payload__message_text", flat=True)) == ["a"]


def test_bucket_is_per_sender_and_bot(make_bot, post_update):
    make_bot("alpha", "100")
    make_bot("beta", "200")
    limits(user_burst=1, user_rate_per_minute=1)
    with time_machine.travel(T0, tick=False):
        assert statuses(post_update, 1, 2, user=7) == ["enqueued", "throttled"]
        assert statuses(post_update, 10, 1, user=8) == ["enqueued"]
        other_bot = post_update("200", text_update(20, "x", user=7)).json()
    assert other_bot["status"] == "enqueued"


def test_queue_cap_counts_queued_and_processing_per_conversation(make_bot, post_update):
    make_bot("alpha", "100")
    limits(conversation_queue_cap=2)
    assert statuses(post_update, 1, 3, user=7) == ["enqueued", "enqueued", "throttled"]
    # Another chat is its own conversation.
    assert statuses(post_update, 10, 1, user=8) == ["enqueued"]
    first, second = Message.objects.filter(payload__metadata__telegram_chat_id="7").order_by("id")
    Message.objects.filter(pk=first.pk).update(status=Message.PROCESSING)
    assert statuses(post_update, 20, 1, user=7) == ["throttled"]
    Message.objects.filter(pk=first.pk).update(status=Message.DONE)
    assert statuses(post_update, 30, 2, user=7) == ["enqueued", "throttled"]
    detail = TelegramUpdate.objects.get(update_id=31).detail
    assert detail == "Conversation telegram:100:7 already has 2 waiting messages."


def test_group_queue_cap_applies_to_every_sender(make_bot, post_update):
    make_bot("alpha", "100")
    limits(conversation_queue_cap=2)
    assert statuses(post_update, 1, 2, user=7, chat=-50) == ["enqueued", "enqueued"]
    assert statuses(post_update, 10, 1, user=8, chat=-50) == ["throttled"]


def test_one_notice_per_minute(make_bot, post_update, tg, django_capture_on_commit_callbacks):
    make_bot("alpha", "100")
    limits(conversation_queue_cap=1)
    with time_machine.travel(T0, tick=False) as clock:
        with django_capture_on_commit_callbacks(execute=True):
            assert statuses(post_update, 1, 3) == ["enqueued", "throttled", "throttled"]
        assert [n["chat_id"] for n in notices(tg)] == ["555"]
        assert notices(tg)[0]["text"] == quotas.NOTICE_TEXT
        clock.shift(59)
        with django_capture_on_commit_callbacks(execute=True):
            assert statuses(post_update, 10, 1) == ["throttled"]
        assert len(notices(tg)) == 1
        clock.shift(2)
        with django_capture_on_commit_callbacks(execute=True):
            assert statuses(post_update, 20, 2) == ["throttled", "throttled"]
        assert len(notices(tg)) == 2


def test_bucket_refusal_also_notifies(
    make_bot, post_update, tg, django_capture_on_commit_callbacks
):
    make_bot("alpha", "100")
    limits(user_burst=1, user_rate_per_minute=1)
    with time_machine.travel(T0, tick=False), django_capture_on_commit_callbacks(execute=True):
        assert statuses(post_update, 1, 3) == ["enqueued", "throttled", "throttled"]
    assert len(notices(tg)) == 1


def test_pairing_and_unbound_answers_take_no_token(make_bot, post_update):
    """Quotas sit at step 6a: pairing (step 5) and unbound (step 6) come first."""
    make_bot("alpha", "100", require_telegram_binding=True)
    limits(user_burst=1, user_rate_per_minute=1)
    with time_machine.travel(T0, tick=False):
        assert statuses(post_update, 1, 3) == ["unbound"] * 3
    assert not SenderQuota.objects.exists()


def test_rolled_back_update_returns_its_token(make_bot):
    make_bot("alpha", "100")
    limits(user_burst=1, user_rate_per_minute=1)
    with time_machine.travel(T0, tick=False):
        with pytest.raises(RuntimeError), transaction.atomic():
            assert quotas.check("100", "7", "telegram:100:7") is None
            raise RuntimeError("the enqueue failed")
        assert quotas.check("100", "7", "telegram:100:7") is None
        assert quotas.check("100", "7", "telegram:100:7") is not None


def test_idle_buckets_are_pruned_with_old_updates(make_bot, post_update):
    make_bot("alpha", "100")
    with time_machine.travel(T0, tick=False):
        post_update("100", text_update(1, "a", user=7))
    with time_machine.travel(T0 + dt.timedelta(hours=23), tick=False):
        post_update("100", text_update(2, "b", user=8))
    result = prune_old_updates(now=T0 + dt.timedelta(hours=25))
    assert result["deleted_sender_quotas"] == 1
    assert list(SenderQuota.objects.values_list("telegram_user_id", flat=True)) == ["8"]


CONCURRENT = 24


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("frozen", [True, False])
def test_concurrent_senders_never_pass_burst_plus_refill(make_bot, frozen):
    """Real concurrent connections on PostgreSQL, each taking a token in its own
    transaction at the same moment: the bucket admits at most burst + rate × elapsed."""
    make_bot("alpha", "100")
    limits(user_burst=5, user_rate_per_minute=60, conversation_queue_cap=1000)

    def take() -> bool:
        with transaction.atomic():
            return quotas.check("100", "7", "telegram:100:7") is None

    traveller = time_machine.travel(T0, tick=not frozen)
    traveller.start()
    started = timezone.now()
    try:
        admitted = run_at_once(take, [()] * CONCURRENT, barrier_timeout=10)
        elapsed = (timezone.now() - started).total_seconds()
    finally:
        traveller.stop()
    assert len(admitted) == CONCURRENT
    if frozen:
        assert sum(admitted) == 5
    else:
        assert 5 <= sum(admitted) <= 5 + int(elapsed * 1.0)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("known", [False, True])
def test_concurrent_updates_of_one_sender_never_pass_the_queue_cap(make_bot, known, monkeypatch):
    """The bucket row serialises one sender's updates, and the cap is counted after it:
    concurrent webhook requests of one sender fill the conversation exactly to the cap.
    ``known``: the sender's bucket and conversation exist already, so the updates race in
    the one-statement path (telegram.sql_admit.admit_at_once), not only in the steps."""
    make_bot("alpha", "100")
    limits(user_burst=100, user_rate_per_minute=100, conversation_queue_cap=3)
    if known:
        assert post_at_once([text_update(100, "first", user=7)]) == ["enqueued"]
        Message.objects.update(status=Message.DONE)  # room for 3 again
    at_once: list[bool] = []
    lock = threading.Lock()
    real_admit = sql_admit.admit_at_once

    def admit_at_once(*args, **kwargs):
        message = real_admit(*args, **kwargs)
        with lock:
            at_once.append(message is not None)
        return message

    monkeypatch.setattr(sql_admit, "admit_at_once", admit_at_once)
    answers = post_at_once([text_update(n, f"m{n}", user=7) for n in range(1, 13)])
    assert sorted(answers) == ["enqueued"] * 3 + ["throttled"] * 9
    assert Message.objects.filter(status=Message.QUEUED).count() == 3
    assert TelegramUpdate.objects.filter(outcome="throttled").count() == 9
    if known:  # the race was run in the one statement, not only in the steps
        assert at_once and sum(at_once) >= 1
