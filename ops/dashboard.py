"""The admin index dashboard: the queue figures of ``workers.dashboard`` with the errors the
channels record (ingress issues, Telegram API errors) and server-drawn charts.

It lives in ops, the top floor, because it reads workers, telegram and fly alike."""

from __future__ import annotations

from agents.external_errors import ExternalApiError
from ops import svg
from telegram.models import Bot, IngressIssue
from telegram.outbox_models import OutboxMessage
from workers.dashboard import RECENT_ERRORS
from workers.dashboard import dashboard_for as queue_dashboard_for


def _can_view(user, label: str) -> bool:
    app, model = label.split(".")
    return user.has_perm(f"{app}.view_{model}") or user.has_perm(f"{app}.change_{model}")


CHANNEL_ERRORS = ("ingress_issues", "telegram_errors", "api_errors", "failed_outbox")


def channel_errors(user) -> dict:
    """Recent ingress issues, webhook errors Telegram reports, Telegram and Fly API errors
    and failed outbox rows (with Telegram's reason), each behind its list's permission:
    one query each, whatever the tables hold."""
    data = {key: [] for key in CHANNEL_ERRORS}
    if _can_view(user, "telegram.ingressissue"):
        data["ingress_issues"] = list(
            IngressIssue.objects.order_by("-created_at", "-id").values(
                "created_at", "kind", "bot_identity", "detail"
            )[:RECENT_ERRORS]
        )
    if _can_view(user, "telegram.bot"):
        data["telegram_errors"] = list(
            Bot.objects.exclude(last_error_message="")
            .order_by("-last_error_at", "-id")
            .values("bot_identity", "username", "last_error_message", "last_error_at")[
                :RECENT_ERRORS
            ]
        )
    if _can_view(user, "agents.externalapierror"):
        labels = dict(ExternalApiError.SERVICE_CHOICES)
        data["api_errors"] = [
            {**row, "label": labels.get(row["service"], row["service"])}
            for row in ExternalApiError.objects.order_by("-last_at", "-id").values(
                "service", "operation", "subject", "status_code", "detail", "count", "last_at"
            )[:RECENT_ERRORS]
        ]
    if _can_view(user, "telegram.outboxmessage"):
        data["failed_outbox"] = list(
            OutboxMessage.objects.filter(status=OutboxMessage.FAILED)
            .order_by("-id")
            .values(
                "id",
                "agent_key",
                "chat_id",
                "kind",
                "attempts",
                "last_error",
                "created_at",
                "job__conversation__conversation_id",
                "conversation__conversation_id",
            )[:RECENT_ERRORS]
        )
    return data


def charts(data: dict) -> dict:
    """The SVG of each chart the data allows."""
    drawn = {}
    if data.get("queue"):
        drawn["queue_chart"] = svg.bars(
            [(row["status"], row["count"]) for row in data["queue"]],
            width=300,
            height=72,
            title="Messages by status",
            label_every=1,
        )
    if data.get("replies_per_minute"):
        drawn["replies_chart"] = svg.bars(
            [(f"{hour:%H:00}", rate) for hour, rate in data["replies_per_minute"]],
            height=92,
            title="Replies per minute, hourly, last 24 h",
            label_every=4,
        )
    if data.get("latency_buckets"):
        drawn["latency_chart"] = svg.bars(
            [(f"≤{bound}s", count) for bound, count in data["latency_buckets"]],
            width=420,
            height=72,
            label_every=1,
            title="Reply latency distribution, last 24 h",
        )
    return drawn


def dashboard_for(user) -> dict:
    data = queue_dashboard_for(user)
    data.update(channel_errors(user))
    if data.get("hidden") and any(data[key] for key in CHANNEL_ERRORS):
        data["hidden"] = False
    data.update(charts(data))
    return data
