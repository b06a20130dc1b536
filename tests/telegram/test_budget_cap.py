"""The monthly budget cap (SPEC §24): month-to-date spend raised with each attempt's cost,
warning at 80 %, pause at 100 % (polite notice once a day, nothing queued, no spawn), resume
on a raised cap or a new month, and a global cap over all agents."""

from __future__ import annotations

import datetime as dt
import io
import json
from decimal import Decimal

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents import budget
from agents.models import AgentProfile, AuditEvent, RuntimeConfig
from agents.services import configure_runtime
from agents.spend import MonthlySpend
from telegram import refusals
from telegram.models import IngressIssue, TelegramUpdate
from tests.telegram.conftest import TG, text_update
from tests.workers.test_reconcile import fake_provider  # noqa: F401 (fixture)
from workers.models import Message, Worker
from workers.reconcile import reconcile
from workers.usage import record_usage

T0 = dt.datetime(2026, 3, 30, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def post_update(post_update, django_capture_on_commit_callbacks):
    """The webhook, with its after-commit tasks (the notices) run."""

    def post(*args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return post_update(*args, **kwargs)

    return post


@pytest.fixture
def tg(tg):
    tg.post(f"{TG}/bot100:TOKEN-alpha/sendMessage", json={"ok": True, "result": {}})
    tg.post(f"{TG}/bot200:TOKEN-beta/sendMessage", json={"ok": True, "result": {}})
    return tg


def notices(mock) -> list[str]:
    return [
        json.loads(call.request.body)["text"]
        for call in mock.calls
        if call.request.url.endswith("/sendMessage")
    ]


def spend(enqueue, agent_key: str, cost: str, conversation: str = "spent") -> None:
    """One finished attempt of ``agent_key`` costing ``cost`` USD, recorded as the worker
    API does (the handler's reported cost)."""
    message = enqueue(f"{conversation}-{agent_key}", agent_key)
    Message.objects.filter(pk=message.pk).update(status=Message.DONE)
    usage = {"input_tokens": 10, "output_tokens": 5, "cost_usd": cost, "model": "m"}
    record_usage(message.pk, usage, "done", dt.datetime.now(dt.UTC))


def set_cap(agent_key: str, amount: str | None) -> None:
    call_command(
        "configure_agent", agent_key, "--monthly-budget-usd", amount or "none", stdout=io.StringIO()
    )


def audits(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action))


def test_warning_at_80_percent_once_and_pause_at_100(db, alpha_agent, enqueue):
    with time_machine.travel(T0, tick=False):
        set_cap("alpha", "10")
        spend(enqueue, "alpha", "7.99")
        assert audits("budget.warning") == [] and budget.paused(alpha_agent) is None
        spend(enqueue, "alpha", "0.01")
        spend(enqueue, "alpha", "1")
        [warning] = audits("budget.warning")
        assert warning.target_id == "alpha" and warning.details["cap_usd"] == "10.00"
        assert audits("budget.paused") == []
        spend(enqueue, "alpha", "1")
        alpha_agent.refresh_from_db()
        pause = budget.paused(alpha_agent)
        assert pause is not None and pause.spent == Decimal("10") and pause.scope == "alpha"
        spend(enqueue, "alpha", "1")
        assert len(audits("budget.paused")) == 1 and len(audits("budget.warning")) == 1
        row = MonthlySpend.objects.get(scope="alpha")
        assert row.cost_usd == Decimal("11") and row.month == dt.date(2026, 3, 1)
        assert MonthlySpend.objects.get(scope="").cost_usd == Decimal("11")


def test_paused_agent_gets_one_notice_nothing_queued_and_no_worker(
    make_bot,
    post_update,
    tg,
    enqueue,
    fake_provider,  # noqa: F811
):
    alpha = make_bot("alpha", "100").agent
    make_bot("beta", "200")
    with time_machine.travel(T0, tick=False):
        set_cap("alpha", "5")
        spend(enqueue, "alpha", "5")
        waiting = enqueue("conv-alpha", "alpha")  # queued before the pause
        enqueue("conv-beta", "beta")
        before = Message.objects.count()

        answers = [post_update("100", text_update(n, f"hi {n}")).json() for n in (1, 2, 3)]
        assert answers == [{"ok": True, "status": "paused"}] * 3
        assert Message.objects.count() == before  # nothing queued
        assert notices(tg) == [refusals.PAUSED_TEXT]  # once
        assert TelegramUpdate.objects.filter(outcome="paused").count() == 3
        assert IngressIssue.objects.filter(kind="budget_paused", notified=True).count() == 1
        # Another agent is not paused.
        assert post_update("200", text_update(4, "hi", user=9)).json()["status"] == "enqueued"

        reconcile()
        spawned = {w.assigned_agent_key for w in Worker.objects.all()}
        assert spawned == {"beta"}
        assert not Worker.objects.filter(assigned_conversation=waiting.conversation).exists()

        # Raising the cap resumes at once: audited, queued, a worker for alpha.
        set_cap("alpha", "50")
        [resumed] = audits("budget.resumed")
        assert resumed.target_id == "alpha" and resumed.actor == "command:configure_agent"
        assert post_update("100", text_update(5, "back?")).json()["status"] == "enqueued"
        reconcile()
        assert Worker.objects.filter(assigned_agent_key="alpha").exists()
    alpha.refresh_from_db()
    assert alpha.monthly_budget_usd == Decimal("50")


def test_notice_again_after_a_day(make_bot, post_update, tg, enqueue):
    make_bot("alpha", "100")
    with time_machine.travel(T0 - dt.timedelta(days=5), tick=False) as clock:
        set_cap("alpha", "1")
        spend(enqueue, "alpha", "2")
        post_update("100", text_update(1, "a"))
        clock.shift(dt.timedelta(hours=23))
        post_update("100", text_update(2, "b"))
        clock.shift(dt.timedelta(hours=2))
        post_update("100", text_update(3, "c"))
    assert notices(tg) == [refusals.PAUSED_TEXT] * 2


def test_global_cap_pauses_every_agent(make_bot, post_update, tg, enqueue):
    make_bot("alpha", "100")
    make_bot("beta", "200")
    with time_machine.travel(T0, tick=False):
        configure_runtime(actor="t", monthly_budget_usd=Decimal("3"))
        spend(enqueue, "alpha", "2")
        assert post_update("200", text_update(1, "hi", user=9)).json()["status"] == "enqueued"
        spend(enqueue, "beta", "1")
        [paused] = audits("budget.paused")
        assert paused.target_id == "all agents"
        assert post_update("100", text_update(2, "hi")).json()["status"] == "paused"
        assert post_update("200", text_update(3, "hi", user=9)).json()["status"] == "paused"
        assert budget.paused_agent_keys({"alpha", "beta"}, T0) == {"alpha", "beta"}
        configure_runtime(actor="t", monthly_budget_usd=Decimal("100"))
        assert len(audits("budget.resumed")) == 1
        assert post_update("100", text_update(4, "hi")).json()["status"] == "enqueued"


def test_a_new_month_resumes(make_bot, post_update, tg, enqueue):
    make_bot("alpha", "100")
    with time_machine.travel(T0, tick=False) as clock:
        set_cap("alpha", "1")
        spend(enqueue, "alpha", "1")
        assert post_update("100", text_update(1, "hi")).json()["status"] == "paused"
        clock.move_to(dt.datetime(2026, 4, 1, 0, 0, 1, tzinfo=dt.UTC))  # UTC calendar month
        assert post_update("100", text_update(2, "hi")).json()["status"] == "enqueued"
        spend(enqueue, "alpha", "0.5")
    assert MonthlySpend.objects.get(scope="alpha", month=dt.date(2026, 4, 1)).cost_usd == Decimal(
        "0.5"
    )


def test_the_webhook_check_is_cheap(db, alpha_agent, enqueue, django_assert_num_queries):
    RuntimeConfig.get_cached()
    with django_assert_num_queries(0):  # no cap anywhere: no query at all
        assert budget.paused(alpha_agent) is None
    alpha_agent.monthly_budget_usd = Decimal("1")
    for n in range(50):
        spend(enqueue, "alpha", "0.001", conversation=f"c{n}")
    with django_assert_num_queries(1):  # one indexed read, however many usage rows
        assert budget.paused(alpha_agent) is None


def test_configure_agent_rejects_a_bad_amount(db):
    with pytest.raises(Exception, match="non-negative"):
        call_command("configure_agent", "alpha", "--monthly-budget-usd", "-3")
    assert not AgentProfile.objects.filter(agent_key="alpha").exists()


@pytest.mark.parametrize("usage_rows", [1, 200])
def test_a_capped_agent_costs_the_webhook_one_query_whatever_its_usage(
    make_bot, client, enqueue, usage_rows
):
    """Measured on the webhook itself (its after-commit tasks not run): a cap adds the one
    month-to-date read, however much usage the agent has."""

    def webhook(update_id: int) -> tuple[str, int]:
        with CaptureQueriesContext(connection) as queries:
            response = client.post(
                "/telegram/webhook/100/",
                json.dumps(text_update(update_id, "hello")),
                content_type="application/json",
                HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN="s" * 40,
            )
            status = response.json()["status"]
        return status, len(queries)

    make_bot("alpha", "100")
    webhook(1)  # config and secrets cached, as in a running server
    uncapped = webhook(2)
    set_cap("alpha", "1000")
    for n in range(usage_rows):
        spend(enqueue, "alpha", "0.01", conversation=f"c{n}")
    webhook(3)  # the runtime config read again after the save
    assert webhook(4) == ("enqueued", uncapped[1] + 1)
    assert uncapped[0] == "enqueued"


def test_the_month_turn_resumes_once_with_an_audit_row(make_bot, post_update, tg, enqueue):
    """A pause for March ends at 00:00 UTC on 1 April: the schedule writes one
    ``budget.resumed`` per paused scope (the agent, and the total), however often it runs."""
    make_bot("alpha", "100")
    with time_machine.travel(dt.datetime(2026, 3, 31, 23, 58, tzinfo=dt.UTC), tick=False) as clock:
        set_cap("alpha", "1")
        configure_runtime(actor="t", monthly_budget_usd=Decimal("1"))
        spend(enqueue, "alpha", "1")
        assert {a.target_id for a in audits("budget.paused")} == {"alpha", "all agents"}
        assert budget.resume_after_month_turn() == 0  # still March: still paused
        clock.move_to(dt.datetime(2026, 3, 31, 23, 59, 59, tzinfo=dt.UTC))
        assert budget.resume_after_month_turn() == 0
        assert audits("budget.resumed") == []

        clock.move_to(dt.datetime(2026, 4, 1, 0, 0, 30, tzinfo=dt.UTC))
        assert budget.resume_after_month_turn() == 2
        resumed = {a.target_id: a for a in audits("budget.resumed")}
        assert set(resumed) == {"alpha", "all agents"}
        details = resumed["alpha"].details
        assert (details["month"], details["paused_month"], details["reason"]) == (
            "2026-04",
            "2026-03",
            "new month",
        )
        assert resumed["alpha"].actor == "system"
        # Exactly once: later runs, and a new month's spend under the cap, add nothing.
        assert budget.resume_after_month_turn() == 0
        clock.shift(dt.timedelta(minutes=1))
        spend(enqueue, "alpha", "0.5")
        assert budget.resume_after_month_turn() == 0
        assert len(audits("budget.resumed")) == 2 and len(audits("budget.paused")) == 2
        assert post_update("100", text_update(1, "hi")).json()["status"] == "enqueued"


def test_a_cap_of_zero_stays_paused_across_the_turn(db, alpha_agent, enqueue):
    with time_machine.travel(dt.datetime(2026, 1, 31, 12, tzinfo=dt.UTC), tick=False) as clock:
        set_cap("alpha", "0")
        spend(enqueue, "alpha", "0.1")
        assert len(audits("budget.paused")) == 1
        clock.move_to(dt.datetime(2026, 2, 1, 0, 1, tzinfo=dt.UTC))
        assert budget.resume_after_month_turn() == 0  # nothing may be spent in February either
        assert audits("budget.resumed") == []
        set_cap("alpha", "2")
        assert budget.resume_after_month_turn() == 1
        assert budget.resume_after_month_turn() == 0
        assert len(audits("budget.resumed")) == 1


def test_the_resume_is_a_schedule():
    from agents.schedules import SCHEDULES

    assert ("resume-budgets-new-month", "agents.budget.resume_after_month_turn", "I", 1) in (
        SCHEDULES
    )
