"""Usage and cost in the admin (SPEC §16, §21, §24): the per-attempt usage records, and the
report page — tokens and estimated cost per agent or consumer user, per day or month, with
totals, a chart and this month's spend against the budget caps. Constant queries."""

from __future__ import annotations

import datetime as dt

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from agents import budget
from agents.admin_access import ReadOnlyAdminMixin, require
from agents.models import AgentProfile
from workers.models import JobUsage
from workers.usage import usage_report

# How far back the report looks unless told: a month of days, a year of months.
DEFAULT_SPAN = {"day": dt.timedelta(days=31), "month": dt.timedelta(days=366)}
CHART_WIDTH, CHART_HEIGHT = 600, 120


@admin.register(JobUsage)
class JobUsageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    deletable = False  # the cost trail outlives any admin
    list_display = [
        "created_at",
        "agent_key",
        "consumer_user",
        "model",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "cost_reported",
        "outcome",
        "message_link",
    ]
    list_filter = ["outcome", "cost_reported", "agent_key", "model"]
    search_fields = ["agent_key", "consumer_user", "model", "=message__id"]
    date_hierarchy = "created_at"
    change_list_template = "admin/workers/jobusage/change_list.html"

    @admin.display(description="Message", ordering="message_id")
    def message_link(self, obj):
        url = reverse("admin:workers_message_change", args=[obj.message_id])
        return format_html('<a href="{}">#{}</a>', url, obj.message_id)

    def get_urls(self):
        view = self.admin_site.admin_view(self.report_view)
        return [path("report/", view, name="workers_usage_report")] + super().get_urls()

    def report_view(self, request):
        require(
            request,
            self.has_view_permission(request),
            door="usage_report",
            permission="workers.view_jobusage",
        )
        filters = _filters(request.GET)
        report = usage_report(
            period=filters["period"],
            group_by=filters["group_by"],
            agent_key=filters["agent"] or None,
            since=filters["since"],
        )
        context = {
            **self.admin_site.each_context(request),
            "title": "Usage and cost",
            "opts": self.model._meta,
            "filters": filters,
            "agents": list(AgentProfile.objects.values_list("agent_key", flat=True)),
            "report": report,
            "chart": _chart(report.rows),
            "budgets": budget.overview(timezone.now()),
        }
        return TemplateResponse(request, "admin/workers/usage_report.html", context)


def _filters(params) -> dict:
    """The page's filters from the query string; anything unknown falls back to a default
    (a bad link shows the default page rather than an error)."""
    period = params.get("period") if params.get("period") in ("day", "month") else "day"
    group_by = params.get("group_by") if params.get("group_by") in ("agent", "user") else "agent"
    try:
        since_date = dt.date.fromisoformat(params.get("since", ""))
        since = dt.datetime.combine(since_date, dt.time(), tzinfo=dt.UTC)
    except ValueError:
        since = timezone.now() - DEFAULT_SPAN[period]
    return {
        "period": period,
        "group_by": group_by,
        "agent": (params.get("agent") or "")[:64],
        "since": since,
    }


def _chart(rows: list[dict]) -> dict:
    """Bars of the estimated cost per period (oldest left), as coordinates for inline SVG."""
    per_period: dict[str, float] = {}
    for row in rows:
        per_period[row["period"]] = per_period.get(row["period"], 0.0) + float(row["cost_usd"])
    periods = sorted(per_period)
    if not periods:
        return {"bars": [], "width": CHART_WIDTH, "height": CHART_HEIGHT}
    top = max(per_period.values()) or 1.0
    step = CHART_WIDTH / len(periods)
    bars = []
    for index, label in enumerate(periods):
        height = round(per_period[label] / top * (CHART_HEIGHT - 20), 1)
        bars.append(
            {
                "x": round(index * step + 1, 1),
                "y": round(CHART_HEIGHT - height, 1),
                "width": round(max(step - 2, 1), 1),
                "height": height,
                "label": label,
                "cost": f"{per_period[label]:.4f}",
            }
        )
    return {"bars": bars, "width": CHART_WIDTH, "height": CHART_HEIGHT, "top": f"{top:.4f}"}
