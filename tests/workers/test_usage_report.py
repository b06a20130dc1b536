"""The admin's usage and cost page (SPEC §16, §21): sums per agent or consumer user, per day
or month, with totals and the budget panel, in the same number of queries for 1 or 1,000
usage rows."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from agents import budget
from agents.models import AgentProfile
from workers.models import JobUsage
from workers.usage import usage_report

DAY = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def usage_rows(alpha_agent, beta_agent, enqueue):
    message = enqueue("conv-1", "alpha")

    def make(count: int, *, start: int = 0):
        JobUsage.objects.bulk_create(
            JobUsage(
                message=message,
                agent_key=("alpha", "beta")[n % 2],
                consumer_user=f"user-{n % 7}",
                model="m",
                input_tokens=100,
                output_tokens=10,
                cost_usd=Decimal("0.001"),
                outcome="failed" if n % 10 == 0 else "done",
                created_at=DAY - dt.timedelta(days=n % 40),
            )
            for n in range(start, start + count)
        )

    return make


def test_sums_per_agent_day_and_month(usage_rows):
    usage_rows(20)
    report = usage_report(period="day", since=DAY - dt.timedelta(days=100))
    first = report.rows[0]
    assert (first["period"], first["agent_key"]) == ("2026-03-10", "alpha")
    assert report.totals["attempts"] == 20 and report.totals["failed_attempts"] == 2
    assert report.totals["input_tokens"] == 2000 and report.totals["cost_usd"] == Decimal("0.02")
    monthly = usage_report(period="month", group_by="user", agent_key="beta", since=None)
    assert {row["agent_key"] for row in monthly.rows} == {"beta"}
    assert {row["period"] for row in monthly.rows} == {"2026-03", "2026-02"}
    assert sum(row["attempts"] for row in monthly.rows) == 10
    assert all("consumer_user" in row for row in monthly.rows)


def test_report_page_shows_totals_budgets_and_chart(admin_client, usage_rows):
    usage_rows(4)
    AgentProfile.objects.filter(agent_key="alpha").update(monthly_budget_usd=Decimal("10"))
    budget.add_spend("alpha", Decimal("9"), dt.datetime.now(dt.UTC))
    url = reverse("admin:workers_usage_report")
    response = admin_client.get(url, {"period": "day", "since": "2026-01-01", "group_by": "user"})
    page = response.content.decode()
    assert response.status_code == 200
    assert "user-1" in page and "<svg" in page and "<rect" in page
    assert "warning: over 80 %" in page  # alpha's month-to-date 9 of 10
    assert "0.0040" in page  # the total cost
    # A bad filter falls back to the defaults rather than failing.
    assert admin_client.get(url, {"period": "year", "since": "soon"}).status_code == 200


@pytest.mark.parametrize("period", ["day", "month"])
def test_report_page_queries_do_not_grow_with_rows(admin_client, usage_rows, period):
    url = reverse("admin:workers_usage_report")
    params = {"period": period, "since": "2026-01-01", "group_by": "user"}
    usage_rows(1)
    admin_client.get(url, params)  # warm the per-process caches
    with CaptureQueriesContext(connection) as one_row:
        assert admin_client.get(url, params).status_code == 200
    usage_rows(999, start=1)
    with CaptureQueriesContext(connection) as many_rows:
        response = admin_client.get(url, params)
    assert response.context["report"].totals["attempts"] == 1000
    assert len(many_rows) == len(one_row)


def test_agent_list_shows_the_budget_and_warns(admin_client, alpha_agent, beta_agent):
    AgentProfile.objects.filter(agent_key="alpha").update(monthly_budget_usd=Decimal("10"))
    budget.add_spend("alpha", Decimal("10"), dt.datetime.now(dt.UTC))
    budget.add_spend("beta", Decimal("1.5"), dt.datetime.now(dt.UTC))
    page = admin_client.get(reverse("admin:agents_agentprofile_changelist")).content.decode()
    assert "$10.00 of $10.00 (100 %): paused" in page
    assert "$1.50 (no cap)" in page
    assert "Budget paused: alpha spent $10.00 of $10.00 this month (100 %)." in page
