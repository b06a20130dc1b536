"""Usage metering (SPEC §21): each attempt's tokens and cost, and their sums per agent and
consumer user per day or month (for ``agent_status --usage``, the admin, the budget cap)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDay, TruncMonth

from agents import budget
from agents.models import AgentProfile
from workers.models import JobUsage, Message

MILLION = Decimal(1_000_000)
PERIODS = {"day": TruncDay, "month": TruncMonth}


def consumer_user_of(payload: dict) -> str:
    """Who the job was for: the bound consumer user, else the channel's user id."""
    metadata = payload.get("metadata") or {}
    if metadata.get("consumer_user_id"):
        return str(metadata["consumer_user_id"])
    return f"{payload.get('provider', '')}:{payload.get('provider_user_id', '')}"


def estimated_cost(profile: AgentProfile | None, input_tokens: int, output_tokens: int) -> Decimal:
    if profile is None:
        return Decimal(0)
    return (
        input_tokens * profile.price_per_million_input_tokens
        + output_tokens * profile.price_per_million_output_tokens
    ) / MILLION


def record_usage(message_id: int, usage: dict | None, outcome: str, now: dt.datetime) -> None:
    """Store one attempt's usage (validated by the API serializer); call inside the
    completing or failing transaction. The handler's cost wins over the agent's prices."""
    if not usage:
        return
    message = (
        Message.objects.select_related("conversation__agent")
        .only("payload", "agent_key", "conversation__agent")
        .get(pk=message_id)
    )
    input_tokens = usage.get("input_tokens") or 0
    output_tokens = usage.get("output_tokens") or 0
    reported = usage.get("cost_usd")
    cost = (
        Decimal(str(round(float(reported), 6)))
        if reported is not None
        else estimated_cost(message.conversation.agent, input_tokens, output_tokens)
    )
    JobUsage.objects.create(
        message_id=message_id,
        agent_key=message.agent_key,
        consumer_user=consumer_user_of(message.payload)[:255],
        model=(usage.get("model") or "")[:200],
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost.quantize(Decimal("0.000001")),
        cost_reported=reported is not None,
        outcome=outcome,
        created_at=now,
    )
    # The month-to-date counter of the budget cap (SPEC §24), raised in the same transaction.
    budget.add_spend(message.agent_key, cost.quantize(Decimal("0.000001")), now)


def usage_summary(
    *,
    period: str = "day",
    agent_key: str | None = None,
    consumer_user: str | None = None,
    since: dt.datetime | None = None,
    by_user: bool = True,
) -> list[dict]:
    """Sums per (period, agent[, consumer user]), newest period first: input and output
    tokens, cost in USD, attempts and failed attempts."""
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}")
    rows = JobUsage.objects.all()
    if agent_key:
        rows = rows.filter(agent_key=agent_key)
    if consumer_user:
        rows = rows.filter(consumer_user=consumer_user)
    if since:
        rows = rows.filter(created_at__gte=since)
    keys = ["period", "agent_key"] + (["consumer_user"] if by_user else [])
    grouped = (
        rows.annotate(period=PERIODS[period]("created_at"))
        .values(*keys)
        .annotate(
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cost_usd=Sum("cost_usd"),
            attempts=Count("id"),
        )
        .order_by("-period", *keys[1:])
    )
    failed = {
        tuple(row[k] for k in keys): row["n"]
        for row in rows.filter(outcome=JobUsage.FAILED)
        .annotate(period=PERIODS[period]("created_at"))
        .values(*keys)
        .annotate(n=Count("id"))
    }
    result = []
    for row in grouped:
        key = tuple(row[k] for k in keys)
        start = row["period"]
        label = start.strftime("%Y-%m-%d" if period == "day" else "%Y-%m")
        result.append(
            {
                **row,
                "period": label,
                "cost_usd": str((row["cost_usd"] or Decimal(0)).quantize(Decimal("0.000001"))),
                "failed_attempts": failed.get(key, 0),
            }
        )
    return result


@dataclass(frozen=True)
class UsageReport:
    """What the admin's usage and cost page shows: grouped rows (newest period first, at most
    ``limit``), their totals, and whether rows were left out."""

    rows: list[dict]
    totals: dict
    truncated: bool


def usage_report(
    *,
    period: str = "day",
    group_by: str = "agent",
    agent_key: str | None = None,
    since: dt.datetime | None = None,
    limit: int = 500,
) -> UsageReport:
    """Tokens, estimated cost and attempts per period and agent, or per period, agent and
    consumer user. Two queries whatever the number of usage rows (grouped rows, totals)."""
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}")
    if group_by not in ("agent", "user"):
        raise ValueError("group_by must be 'agent' or 'user'")
    rows = JobUsage.objects.all()
    if agent_key:
        rows = rows.filter(agent_key=agent_key)
    if since:
        rows = rows.filter(created_at__gte=since)
    sums = {
        "input_tokens": Sum("input_tokens"),
        "output_tokens": Sum("output_tokens"),
        "cost_usd": Sum("cost_usd"),
        "attempts": Count("id"),
        "failed_attempts": Count("id", filter=Q(outcome=JobUsage.FAILED)),
    }
    keys = ["period", "agent_key"] + (["consumer_user"] if group_by == "user" else [])
    grouped = list(
        rows.annotate(period=PERIODS[period]("created_at"))
        .values(*keys)
        .annotate(**sums)
        .order_by("-period", *keys[1:])[: limit + 1]
    )
    label = "%Y-%m-%d" if period == "day" else "%Y-%m"
    for row in grouped:
        row["period"] = row["period"].strftime(label)
        row["cost_usd"] = row["cost_usd"] or Decimal(0)
    totals = rows.aggregate(**sums)
    totals["cost_usd"] = totals["cost_usd"] or Decimal(0)
    return UsageReport(rows=grouped[:limit], totals=totals, truncated=len(grouped) > limit)
