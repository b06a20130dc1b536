"""Usage metering (SPEC §21) through the worker API and its sums, and the one apology a
user gets when their message dead-letters (SPEC §22)."""

from __future__ import annotations

import datetime as dt
import io
import json
from decimal import Decimal

import pytest
import responses
import time_machine
from django.core.management import call_command
from django.utils import timezone

from agents.secret_store import import_secret
from telegram.dead_letters import APOLOGY_TEXT
from tests.conftest import post_job
from workers import leases, queue
from workers.models import JobUsage, Message
from workers.usage import usage_summary

API = "/api/v1/worker"


@pytest.fixture
def priced(alpha_agent):
    alpha_agent.price_per_million_input_tokens = Decimal("2.5")
    alpha_agent.price_per_million_output_tokens = Decimal("10")
    alpha_agent.save()
    return alpha_agent


@pytest.fixture
def holder(priced, claim_as, enqueue):
    def claim(text="hello", conversation="conv-u", **payload_metadata):
        enqueue(conversation, "alpha", text, max_attempts=2)
        _, api, job = claim_as()
        return api, job

    return claim


def test_complete_and_fail_store_usage_with_the_cost(holder):
    api, job = holder()
    usage = {"input_tokens": 1000, "output_tokens": 200, "model": "gpt-4o-mini"}
    assert post_job(api, job, "fail", error="boom", usage=usage).json()["status"] == "queued"
    failed = JobUsage.objects.get()
    assert (failed.outcome, failed.consumer_user, failed.model) == (
        "failed",
        "telegram:u1",
        "gpt-4o-mini",
    )
    # tokens × the agent's prices: 1000 × 2.5/M + 200 × 10/M
    assert failed.cost_usd == Decimal("0.004500") and not failed.cost_reported

    api, job = holder()
    reported = {**usage, "cost_usd": "0.5"}
    with time_machine.travel(timezone.now() + dt.timedelta(seconds=5)):
        api, job = holder(conversation="conv-u2")
        assert post_job(api, job, "complete", usage=reported).status_code == 200
    done = JobUsage.objects.get(outcome="done")
    assert done.cost_usd == Decimal("0.5") and done.cost_reported  # the handler's figure wins
    assert done.message_id == job["message_id"]


def test_usage_is_optional_and_validated(holder):
    api, job = holder()
    bad = post_job(api, job, "complete", usage={"input_tokens": -1})
    assert bad.status_code == 400 and "input_tokens" in json.dumps(bad.json())
    assert Message.objects.get().status == "processing" and not JobUsage.objects.exists()
    assert post_job(api, job, "complete").status_code == 200  # old workers send none
    assert not JobUsage.objects.exists()


def test_sums_per_agent_user_day_and_month_and_the_command(holder, cli_out):
    with time_machine.travel(dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)):
        api, job = holder()
        post_job(api, job, "complete", usage={"input_tokens": 10, "output_tokens": 5, "model": "m"})
    with time_machine.travel(dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)):
        for conversation in ("a", "b"):
            api, job = holder(conversation=conversation)
            post_job(api, job, "fail", error="x", usage={"input_tokens": 100, "output_tokens": 0})
    days = usage_summary(period="day", agent_key="alpha")
    assert [
        (r["period"], r["input_tokens"], r["attempts"], r["failed_attempts"]) for r in days
    ] == [
        ("2026-03-02", 200, 2, 2),
        ("2026-03-01", 10, 1, 0),
    ]
    [month] = usage_summary(period="month", agent_key="alpha")
    assert (month["period"], month["input_tokens"], month["output_tokens"]) == ("2026-03", 210, 5)
    assert month["cost_usd"] == "0.000575" and month["consumer_user"] == "telegram:u1"
    data = json.loads(cli_out("agent_status", "alpha", "--usage", "month", "--json"))
    assert data["usage"] == [month] and data["period"] == "month"
    text = cli_out("agent_status", "alpha", "--usage")
    assert "2026-03-02  telegram:u1: 200 in, 0 out, $0.000500, 2 attempts (2 failed)" in text


def test_bound_users_are_summed_as_their_consumer_user(priced, enqueue, make_worker):
    from workers.queue import enqueue_message

    payload = {"provider": "telegram", "provider_user_id": "55", "message_text": "hi",
               "metadata": {"consumer_user_id": "customer-7"}}  # fmt: skip
    enqueue_message(conversation_id="c", agent_key="alpha", payload=payload)
    worker = make_worker(heartbeat_at=timezone.now())[0]
    job = leases.claim_next_job(worker)
    leases.complete_job(worker, job.message.pk, job.lease_id, {"input_tokens": 3})
    assert JobUsage.objects.get().consumer_user == "customer-7"
    assert usage_summary(consumer_user="customer-7")[0]["input_tokens"] == 3


@pytest.fixture
def cli_out(db):
    def run(*args):
        out = io.StringIO()
        call_command(*args, stdout=out)
        return out.getvalue()

    return run


# The apology -------------------------------------------------------------------------------
TOKEN = "4321:apology-token"


@pytest.fixture
def telegram(settings, alpha_agent):
    settings.TELEGRAM_API_BASE_URL = "https://tg.test"
    import_secret("telegram.botToken.alpha", TOKEN, actor="t")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(
            responses.POST,
            f"https://tg.test/bot{TOKEN}/sendMessage",
            json={"ok": True, "result": {"message_id": 1}},
        )
        yield mock


def sent(mock) -> list[dict]:
    return [json.loads(call.request.body) for call in mock.calls]


def telegram_message(chat="900", max_attempts=1):
    from workers.queue import enqueue_message

    payload = {"provider": "telegram", "provider_user_id": "9", "message_text": "hi",
               "metadata": {"telegram_chat_id": chat}}  # fmt: skip
    return enqueue_message(
        conversation_id=f"telegram:1:{chat}", agent_key="alpha", payload=payload,
        max_attempts=max_attempts,
    ).message  # fmt: skip


def test_a_dead_letter_gets_one_apology_never_the_error_never_twice(
    telegram, make_worker, django_capture_on_commit_callbacks
):
    message = telegram_message(max_attempts=2)
    worker = make_worker(heartbeat_at=timezone.now())[0]
    with django_capture_on_commit_callbacks(execute=True):
        job = leases.claim_next_job(worker)
        leases.fail_job(worker, message.pk, job.lease_id, "secret upstream error text")
    assert sent(telegram) == []  # a retry is coming: no apology yet
    with time_machine.travel(timezone.now() + dt.timedelta(minutes=5)):  # past the backoff
        with django_capture_on_commit_callbacks(execute=True):
            job = leases.claim_next_job(worker)
            leases.fail_job(worker, message.pk, job.lease_id, "secret upstream error text")
        [apology] = sent(telegram)
        assert apology == {"chat_id": "900", "text": APOLOGY_TEXT}
        message.refresh_from_db()
        assert message.status == "dead_letter" and message.apologized_at is not None
        # Requeued from the admin, dead again: no second apology for the same message.
        queue.requeue_dead_letters([message.pk], actor="t")
        with django_capture_on_commit_callbacks(execute=True):
            job = leases.claim_next_job(worker)
            leases.fail_job(worker, message.pk, job.lease_id, "again")
    later = timezone.now() + dt.timedelta(minutes=10)
    with time_machine.travel(later), django_capture_on_commit_callbacks(execute=True):
        job = leases.claim_next_job(worker)
        leases.fail_job(worker, message.pk, job.lease_id, "again")
    assert Message.objects.get().status == "dead_letter"
    assert len(sent(telegram)) == 1


def test_a_swept_dead_letter_apologises_too(
    telegram, make_worker, django_capture_on_commit_callbacks
):
    message = telegram_message(chat="901")
    worker = make_worker(heartbeat_at=timezone.now())[0]
    job = leases.claim_next_job(worker)
    expired = job.lease_expires_at + dt.timedelta(seconds=1)
    with time_machine.travel(expired, tick=False), django_capture_on_commit_callbacks(execute=True):
        assert leases.sweep_expired_leases()["dead_lettered"] == 1
    assert sent(telegram) == [{"chat_id": "901", "text": APOLOGY_TEXT}]
    assert Message.objects.get(pk=message.pk).apologized_at is not None


def test_no_apology_when_the_reply_was_delivered(
    telegram, make_worker, django_capture_on_commit_callbacks
):
    message = telegram_message(chat="902")
    worker = make_worker(heartbeat_at=timezone.now())[0]
    job = leases.claim_next_job(worker)
    leases.mark_delivered(worker, message.pk, job.lease_id)
    with django_capture_on_commit_callbacks(execute=True):
        leases.fail_job(worker, message.pk, job.lease_id, "crashed after delivery")
    assert sent(telegram) == []
    assert Message.objects.get(pk=message.pk).status == "dead_letter"


def test_a_precise_reported_cost_is_rounded_to_micro_dollars(holder):
    api, job = holder()
    usage = {"input_tokens": 1, "output_tokens": 1, "cost_usd": 0.0012345678, "model": "m"}
    assert post_job(api, job, "complete", usage=usage).status_code == 200
    assert JobUsage.objects.get().cost_usd == Decimal("0.001235")


def test_usage_of_an_unknown_agent_is_one_clear_error(db):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="Agent profile 'ghost' not found."):
        call_command("agent_status", "ghost", "--usage", stdout=io.StringIO())
    with pytest.raises(ValueError, match="period must be one of day, month"):
        usage_summary(period="week")
