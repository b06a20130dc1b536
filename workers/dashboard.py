"""The admin index's queue dashboard: depth by status, oldest wait, replies per minute and
reply latency over 24 h, workers by status and provider, dead letters and recent errors.

Every figure comes from a fixed number of aggregate queries (the rows are never loaded one
by one), so the page costs the same with ten messages or ten million."""

from __future__ import annotations

import datetime as dt

from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q
from django.db.models.functions import Coalesce, TruncHour
from django.utils import timezone

from workers.models import Message, Worker
from workers.reconcile import SPAWN_FAILED

WINDOW = dt.timedelta(hours=24)
# Reply latency buckets (upper bounds, seconds), as a Prometheus histogram: percentiles are
# read off the counts per bucket, so the database answers with one row whatever the volume.
LATENCY_BOUNDS = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600)
RECENT_ERRORS = 5


def _latency():
    """Enqueue → delivered (or completed, for a reply the worker sent itself)."""
    return ExpressionWrapper(
        Coalesce("delivered_at", "completed_at") - F("created_at"), output_field=DurationField()
    )


def percentile(counts: list[int], total: int, q: float) -> float | None:
    """The ``q`` quantile (0..1) from cumulative-free bucket counts, interpolated linearly
    inside its bucket; beyond the last bound it is that bound (an honest "at least")."""
    if not total:
        return None
    rank, seen, lower = q * total, 0, 0.0
    for bound, count in zip(LATENCY_BOUNDS, counts, strict=False):
        if count and seen + count >= rank:
            return round(lower + (bound - lower) * (rank - seen) / count, 3)
        seen, lower = seen + count, bound
    return float(LATENCY_BOUNDS[-1])


def reply_figures(now: dt.datetime) -> dict:
    """Replies per minute (hourly bars) and latency percentiles of the last 24 h: 2 queries."""
    since = now - WINDOW
    replies = Message.objects.filter(status=Message.DONE, created_at__gte=since)
    buckets = {
        f"le_{i}": Count("id", filter=Q(latency__lte=dt.timedelta(seconds=bound)))
        for i, bound in enumerate(LATENCY_BOUNDS)
    }
    agg = replies.annotate(latency=_latency()).aggregate(total=Count("id"), **buckets)
    cumulative = [agg[f"le_{i}"] for i in range(len(LATENCY_BOUNDS))]
    counts = [c - p for c, p in zip(cumulative, [0, *cumulative], strict=False)]
    total = agg["total"]
    per_hour = dict(
        replies.annotate(hour=TruncHour("created_at")).values_list("hour").annotate(n=Count("id"))
    )
    start = (now - dt.timedelta(hours=23)).replace(minute=0, second=0, microsecond=0)
    hours = [start + dt.timedelta(hours=i) for i in range(24)]
    return {
        "replies_24h": total,
        "replies_per_minute": [(hour, round(_count_at(per_hour, hour) / 60, 2)) for hour in hours],
        "latency_p50": percentile(counts, total, 0.5),
        "latency_p95": percentile(counts, total, 0.95),
        "latency_buckets": list(zip(LATENCY_BOUNDS, counts, strict=False)),
    }


def _count_at(per_hour: dict, hour: dt.datetime) -> int:
    # SQLite hands back naive or aware datetimes depending on the driver: compare as UTC.
    for key, count in per_hour.items():
        if key is not None and _as_utc(key) == _as_utc(hour):
            return count
    return 0


def _as_utc(value: dt.datetime) -> dt.datetime:
    if timezone.is_naive(value):
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def dashboard_data(now: dt.datetime | None = None) -> dict:
    """Every queue and worker figure of the index page (8 queries)."""
    now = now or timezone.now()
    by_status = dict(Message.objects.values_list("status").annotate(n=Count("id")))
    oldest = Message.objects.ready(now).aggregate(oldest=Min("scheduled_for"))["oldest"]
    workers = list(
        Worker.objects.values_list("status", "provider").annotate(n=Count("id")).order_by()
    )
    by_worker_status = {s: 0 for s, _ in Worker.STATUS_CHOICES}
    for status, _, count in workers:
        by_worker_status[status] = by_worker_status.get(status, 0) + count
    peak = max([1, *by_status.values()])
    queue = [
        {
            "status": status,
            "count": by_status.get(status, 0),
            "width": int(100 * by_status.get(status, 0) / peak),
        }
        for status, _ in Message.STATUS_CHOICES
    ]
    return {
        "queue": queue,
        "oldest_wait_seconds": int((now - oldest).total_seconds()) if oldest else None,
        "workers": [{"status": s, "count": n} for s, n in by_worker_status.items()],
        "workers_by_provider": [
            {"status": s, "provider": p, "count": n} for s, p, n in sorted(workers)
        ],
        "dead_letters": by_status.get(Message.DEAD_LETTER, 0),
        "recent_errors": list(
            Message.objects.exclude(last_error="")
            .order_by("-id")
            .values("id", "agent_key", "status", "last_error", "conversation__conversation_id")[
                :RECENT_ERRORS
            ]
        ),
        "failed_spawns": list(
            Worker.objects.filter(status_reason=SPAWN_FAILED)
            .order_by("-created_at")
            .values("worker_id", "provider", "last_error", "created_at")[:RECENT_ERRORS]
        ),
        **reply_figures(now),
    }


def dashboard_for(user) -> dict:
    """The dashboard parts ``user`` may see: the queue (and its errors, which quote message
    failures) needs the view permission on messages, the worker counts on workers. The
    admin index is open to every staff user, so it must not show more than the lists do."""
    can_view = {
        model: user.has_perm(f"workers.view_{model}") or user.has_perm(f"workers.change_{model}")
        for model in ("message", "worker")
    }
    if not any(can_view.values()):
        return {"hidden": True}
    data = dashboard_data()
    if not can_view["message"]:
        data.update(
            queue=[],
            oldest_wait_seconds=None,
            dead_letters=None,
            recent_errors=[],
            replies_per_minute=[],
            replies_24h=None,
            latency_p50=None,
            latency_p95=None,
            latency_buckets=[],
        )
    if not can_view["worker"]:
        data.update(workers=[], workers_by_provider=[], failed_spawns=[])
    return data
