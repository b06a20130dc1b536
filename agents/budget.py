"""The monthly budget cap (SPEC §24): month-to-date spend per agent and in total, the 80 %
warning and the 100 % pause with their audit rows, and the cheap "is this agent paused?"
asked by the webhook, the autoscaler and the push dispatcher.

Spend lives in ``MonthlySpend`` rows raised with each attempt's cost (``add_spend``, called
in the usage transaction), so a check reads at most one indexed row pair and no check at all
runs while no cap is set. A month is a calendar month in UTC: a new month starts from zero
rows, so a paused agent resumes when the month turns; raising a cap resumes it at once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from agents import events
from agents.audit import record_audit
from agents.models import AgentProfile, RuntimeConfig
from agents.spend import MonthlySpend

GLOBAL = MonthlySpend.GLOBAL
WARNING_RATIO = Decimal("0.8")


def month_start(now: dt.datetime) -> dt.date:
    return now.astimezone(dt.UTC).date().replace(day=1)


def add_spend(agent_key: str, cost_usd: Decimal, now: dt.datetime) -> None:
    """Raise this month's spend of the agent and the total by one attempt's cost; call in
    the transaction that records the usage. Writes the warning/pause audit rows on the
    attempt that crosses 80 % or 100 %."""
    if cost_usd <= 0:
        return
    month = month_start(now)
    for scope in (agent_key, GLOBAL):
        _increment(scope, month, cost_usd)
    sync_flags(agent_key, now)


def _increment(scope: str, month: dt.date, cost: Decimal) -> None:
    rows = MonthlySpend.objects.filter(scope=scope, month=month)
    if rows.update(cost_usd=F("cost_usd") + cost):
        return
    try:
        with transaction.atomic():  # a savepoint: a concurrent first insert loses cleanly
            MonthlySpend.objects.create(scope=scope, month=month, cost_usd=cost)
    except IntegrityError:
        rows.update(cost_usd=F("cost_usd") + cost)


@dataclass(frozen=True)
class Pause:
    scope: str  # the agent key, or "" for the global cap
    spent: Decimal
    cap: Decimal

    @property
    def detail(self) -> str:
        who = f"Agent '{self.scope}'" if self.scope else "All agents together"
        return f"{who} spent ${self.spent:.2f} of a ${self.cap:.2f} monthly budget."


def _caps(agent: AgentProfile, config: RuntimeConfig) -> dict[str, Decimal]:
    caps = {}
    if agent.monthly_budget_usd is not None:
        caps[agent.agent_key] = agent.monthly_budget_usd
    if config.monthly_budget_usd is not None:
        caps[GLOBAL] = config.monthly_budget_usd
    return caps


def paused(agent: AgentProfile, now: dt.datetime | None = None) -> Pause | None:
    """Why ``agent`` takes no new messages now (its own cap or the global one reached), or
    None. No query while no cap is set; else one indexed read of at most two rows."""
    caps = _caps(agent, RuntimeConfig.get_cached())
    if not caps:
        return None
    spent = dict(
        MonthlySpend.objects.filter(
            month=month_start(now or timezone.now()), scope__in=list(caps)
        ).values_list("scope", "cost_usd")
    )
    for scope, cap in caps.items():
        if spent.get(scope, Decimal(0)) >= cap:
            return Pause(scope, spent.get(scope, Decimal(0)), cap)
    return None


def paused_agent_keys(agent_keys: set[str], now: dt.datetime) -> set[str]:
    """The agents among ``agent_keys`` that are paused (for the autoscaler: no spawn)."""
    if not agent_keys:
        return set()
    config = RuntimeConfig.get()
    month = month_start(now)
    spent = dict(
        MonthlySpend.objects.filter(month=month, scope__in=[*agent_keys, GLOBAL]).values_list(
            "scope", "cost_usd"
        )
    )
    if config.monthly_budget_usd is not None and spent.get(GLOBAL, 0) >= config.monthly_budget_usd:
        return set(agent_keys)
    caps = AgentProfile.objects.filter(
        agent_key__in=agent_keys, monthly_budget_usd__isnull=False
    ).values_list("agent_key", "monthly_budget_usd")
    return {key for key, cap in caps if spent.get(key, Decimal(0)) >= cap}


def without_paused_agents(targets: dict, now: dt.datetime) -> dict:
    """The autoscaler's demand ({conversation: agent key}) minus paused agents'
    conversations: no worker is spawned (or moved) for a paused agent."""
    stopped = paused_agent_keys(set(targets.values()), now)
    if not stopped:
        return targets
    return {conv: key for conv, key in targets.items() if key not in stopped}


def sync_flags(agent_key: str | None, now: dt.datetime, actor: str = "system") -> None:
    """Bring this month's warning and pause marks of the agent (when given) and of the total
    in line with spend and caps, writing an audit row for each change: ``budget.warning``
    (once a month), ``budget.paused``, ``budget.resumed`` (a cap raised or removed).
    Conditional updates, so concurrent callers audit a change once."""
    # The cached config: a cap change saves it, which empties this process's cache.
    caps = {GLOBAL: RuntimeConfig.get_cached().monthly_budget_usd}
    if agent_key:
        caps[agent_key] = (
            AgentProfile.objects.filter(agent_key=agent_key)
            .values_list("monthly_budget_usd", flat=True)
            .first()
        )
    rows = MonthlySpend.objects.filter(month=month_start(now), scope__in=list(caps))
    for row in rows:
        _sync_row(row, caps[row.scope], now, actor)


def _sync_row(row: MonthlySpend, cap: Decimal | None, now: dt.datetime, actor: str) -> None:
    same = MonthlySpend.objects.filter(pk=row.pk)
    details = {
        "agent_key": row.scope or None,
        "month": f"{row.month:%Y-%m}",
        "spent_usd": str(row.cost_usd),
        "cap_usd": str(cap) if cap is not None else None,
    }
    target = row.scope or "all agents"
    over = cap is not None and row.cost_usd >= cap
    warn = cap is not None and row.cost_usd >= cap * WARNING_RATIO
    # Checked on the row just read first, so an attempt that changes nothing writes nothing.
    if warn and row.warned_at is None and same.filter(warned_at__isnull=True).update(warned_at=now):
        record_audit(actor, "budget.warning", target, **details)
    if over and row.paused_at is None and same.filter(paused_at__isnull=True).update(paused_at=now):
        record_audit(actor, "budget.paused", target, **details)
        _paused_event(row, cap)
    if (
        not over
        and row.paused_at is not None
        and same.filter(paused_at__isnull=False).update(paused_at=None)
    ):
        record_audit(actor, "budget.resumed", target, **details)


def resume_after_month_turn(now: dt.datetime | None = None) -> int:
    """Write ``budget.resumed`` once for each agent (and the total) whose pause belonged to
    a month that has ended: a new calendar month starts from zero spend (SPEC §24). A
    schedule, every minute; one query when nothing was paused.

    The ended month's ``paused_at`` is cleared by a conditional update, so concurrent runs
    (several clusters) audit it once. A scope still over its cap in the new month (a cap
    of 0) stays marked and resumes on a later run, once the cap allows it."""
    now = now or timezone.now()
    month = month_start(now)
    ended = list(MonthlySpend.objects.filter(month__lt=month, paused_at__isnull=False))
    if not ended:
        return 0
    caps = {GLOBAL: RuntimeConfig.get().monthly_budget_usd}
    caps.update(
        AgentProfile.objects.filter(agent_key__in={r.scope for r in ended} - {GLOBAL}).values_list(
            "agent_key", "monthly_budget_usd"
        )
    )
    spent = month_to_date_all(now)
    resumed = 0
    for row in ended:
        cap = caps.get(row.scope)
        if cap is not None and spent.get(row.scope, Decimal(0)) >= cap:
            continue  # still over its cap in the new month: still paused
        with transaction.atomic():
            cleared = MonthlySpend.objects.filter(pk=row.pk, paused_at__isnull=False).update(
                paused_at=None
            )
            if cleared:
                record_audit(
                    "system",
                    "budget.resumed",
                    row.scope or "all agents",
                    agent_key=row.scope or None,
                    month=f"{month:%Y-%m}",
                    paused_month=f"{row.month:%Y-%m}",
                    reason="new month",
                    spent_usd=str(row.cost_usd),
                    cap_usd=str(cap) if cap is not None else None,
                )
                resumed += 1
    return resumed


def _paused_event(row: MonthlySpend, cap: Decimal) -> None:
    """``budget.paused`` for the host app (SPEC §15). An agent's own cap tells its keys the
    figures; the global cap pauses every agent and tells every key, without the operator's
    total spend."""
    data: dict = {"scope": "agent" if row.scope else "all_agents", "month": f"{row.month:%Y-%m}"}
    if row.scope:
        data.update(spent_usd=str(row.cost_usd), cap_usd=str(cap))
    events.emit(events.BUDGET_PAUSED, agent_key=row.scope, consumer_user_id=None, data=data)


def overview(now: dt.datetime) -> list[dict]:
    """This month's spend against each cap, for the admin: the global total first, then
    every agent that has a cap or spent something. Three queries."""
    config = RuntimeConfig.get()
    spent = month_to_date_all(now)
    caps = dict(
        AgentProfile.objects.filter(monthly_budget_usd__isnull=False).values_list(
            "agent_key", "monthly_budget_usd"
        )
    )
    rows = [_status(GLOBAL, config.monthly_budget_usd, spent.get(GLOBAL))]
    for scope in sorted((set(caps) | set(spent)) - {GLOBAL}):
        rows.append(_status(scope, caps.get(scope), spent.get(scope)))
    return rows


def month_to_date_all(now: dt.datetime) -> dict[str, Decimal]:
    return dict(
        MonthlySpend.objects.filter(month=month_start(now)).values_list("scope", "cost_usd")
    )


def _status(scope: str, cap: Decimal | None, spent: Decimal | None) -> dict:
    spent = spent or Decimal(0)
    percent = None if not cap else int(spent * 100 / cap)
    if cap is not None and spent >= cap:
        state = "paused"
    elif cap is not None and spent >= cap * WARNING_RATIO:
        state = "warning"
    else:
        state = "ok" if cap is not None else "no cap"
    return {
        "scope": scope,
        "label": scope or "All agents",
        "cap": cap,
        "spent": spent.quantize(Decimal("0.01")),
        "percent": percent,
        "state": state,
    }


def month_spend_subquery(now: dt.datetime):
    """This month's spend of the outer AgentProfile row, to annotate a list in one query."""
    from django.db.models import OuterRef, Subquery

    return Subquery(
        MonthlySpend.objects.filter(month=month_start(now), scope=OuterRef("agent_key")).values(
            "cost_usd"
        )[:1]
    )


def describe(cap: Decimal | None, spent: Decimal | None) -> str:
    """ "$3.20 of $10.00 (32 %)", with "warning"/"paused" when over 80 %/100 %."""
    status = _status("", cap, spent)
    if cap is None:
        return f"${status['spent']} (no cap)"
    text = f"${status['spent']} of ${cap} ({status['percent']} %)"
    return text if status["state"] == "ok" else f"{text}: {status['state']}"
