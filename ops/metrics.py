"""Prometheus metrics at ``/metrics`` (SPEC §24), read from the database at each scrape.

Every number comes from the tables, not from counters in process memory: with several
gunicorn processes (and servers) any one of them answers a scrape with the whole system's
figures. A scrape costs a constant number of queries (one per family group below), whatever
the size of the tables. Counters (``*_total``) count rows, so they fall when old rows are
pruned; Prometheus treats that as a counter reset.

Access: a staff session, or ``Authorization: Bearer <METRICS_TOKEN>`` (never a worker token:
those authenticate workers, nothing else)."""

from __future__ import annotations

import datetime as dt
import hmac

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Sum
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.utils import floatToGoString

from agents.external_errors import ExternalApiError
from agents.models import AuditEvent
from telegram.models import Bot, IngressIssue, OutboxMessage
from workers.models import Message, Worker

PREFIX = "agent_factory"
# Reply latency (enqueued → delivered to the user), seconds.
LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
WAITING = (Message.QUEUED, Message.PROCESSING)


def _by_status(model, name: str, documentation: str, **aggregates) -> tuple:
    """A gauge of ``model``'s rows per status (every status, 0 when it has none) in one
    grouped query, and that query's rows by status (with ``aggregates``)."""
    rows = {
        row["status"]: row
        for row in model.objects.order_by().values("status").annotate(n=Count("pk"), **aggregates)
    }
    depth = GaugeMetricFamily(name, documentation, labels=["status"])
    for status, _label in model.STATUS_CHOICES:
        depth.add_metric([status], rows[status]["n"] if status in rows else 0)
    return depth, rows


def _queue(now) -> list:
    depth, rows = _by_status(
        Message, f"{PREFIX}_queue_messages", "Messages in the queue table by status.",
        oldest=Min("created_at"),
    )  # fmt: skip
    oldest = GaugeMetricFamily(
        f"{PREFIX}_queue_oldest_waiting_seconds",
        "Age of the oldest message waiting for its reply (queued or processing); 0 if none.",
    )
    waiting_since = [rows[s]["oldest"] for s in WAITING if s in rows]
    oldest.add_metric(
        [], max(0.0, (now - min(waiting_since)).total_seconds()) if waiting_since else 0
    )
    return [depth, oldest]


def _outbox() -> list:
    """Outbox rows by status, and rows sent again after being stuck in ``sending`` (each a
    possible duplicate, SPEC §22)."""
    depth, rows = _by_status(
        OutboxMessage, f"{PREFIX}_outbox_messages", "Outbox rows by status.",
        stuck=Sum("stuck_retries"),
    )  # fmt: skip
    stuck = CounterMetricFamily(
        f"{PREFIX}_outbox_stuck_retries",
        "Outbox rows sent again after a sender died mid-send (possible duplicates).",
    )
    stuck.add_metric([], sum(row["stuck"] or 0 for row in rows.values()))
    return [depth, stuck]


def _jobs() -> list:
    latency = ExpressionWrapper(F("delivered_at") - F("created_at"), output_field=DurationField())
    delivered = Q(delivered_at__isnull=False)
    buckets = {
        f"le_{i}": Count(
            "pk", filter=delivered & Q(delivered_at__lte=F("created_at") + dt.timedelta(seconds=b))
        )
        for i, b in enumerate(LATENCY_BUCKETS)
    }
    totals = Message.objects.order_by().aggregate(
        claims=Sum("attempts"),
        completes=Count("pk", filter=Q(completed_at__isnull=False)),
        processing=Count("pk", filter=Q(status=Message.PROCESSING)),
        delivered=Count("pk", filter=delivered),
        latency_sum=Sum(latency, filter=delivered),
        **buckets,
    )
    claims = totals["claims"] or 0
    families = [
        CounterMetricFamily(
            f"{PREFIX}_claims", "Claims (attempts) of the messages in the table.", claims
        ),
        CounterMetricFamily(
            f"{PREFIX}_completes", "Messages completed by their worker.", totals["completes"]
        ),
        CounterMetricFamily(
            f"{PREFIX}_failures",
            "Attempts that ended without completing (failed, or the lease expired).",
            max(0, claims - totals["completes"] - totals["processing"]),
        ),
    ]
    histogram = HistogramMetricFamily(
        f"{PREFIX}_reply_latency_seconds", "From enqueue to the reply delivered to the user."
    )
    latency_sum = totals["latency_sum"]
    histogram.add_metric(
        [],
        [(floatToGoString(b), totals[f"le_{i}"]) for i, b in enumerate(LATENCY_BUCKETS)]
        + [("+Inf", totals["delivered"])],
        latency_sum.total_seconds() if latency_sum else 0.0,
    )
    return [*families, histogram]


def _workers() -> list:
    workers = GaugeMetricFamily(
        f"{PREFIX}_workers", "Workers by status and provider.", labels=["status", "provider"]
    )
    failed_spawns = GaugeMetricFamily(
        f"{PREFIX}_workers_with_error",
        "Workers whose last spawn, provider call or teardown failed (Fly and local API errors).",
        labels=["provider"],
    )
    errors: dict[str, int] = {}
    rows = (
        Worker.objects.order_by()
        .values("status", "provider")
        .annotate(n=Count("pk"), with_error=Count("pk", filter=~Q(last_error="")))
    )
    for row in rows:
        workers.add_metric([row["status"], row["provider"]], row["n"])
        errors[row["provider"]] = errors.get(row["provider"], 0) + row["with_error"]
    for provider, n in sorted(errors.items()):
        failed_spawns.add_metric([provider], n)
    return [workers, failed_spawns]


def _api_errors() -> list:
    issues = CounterMetricFamily(
        f"{PREFIX}_ingress_issues",
        "Webhook updates refused or unroutable, by kind.",
        labels=["kind"],
    )
    for row in IngressIssue.objects.order_by().values("kind").annotate(n=Count("pk")):
        issues.add_metric([row["kind"]], row["n"])
    telegram = GaugeMetricFamily(
        f"{PREFIX}_telegram_bots_with_webhook_error",
        "Bots whose last getWebhookInfo reported a delivery error from Telegram.",
        Bot.objects.exclude(last_error_message="").count(),
    )
    fly = CounterMetricFamily(
        f"{PREFIX}_fly_cleanup_failures",
        "Fly cleanup runs that failed on the Fly API.",
        AuditEvent.objects.filter(action="fly.cleanup_failed").count(),
    )
    calls = CounterMetricFamily(
        f"{PREFIX}_external_api_errors",
        "Failed Telegram Bot API and Fly Machines API calls (kept 14 days), by service.",
        labels=["service"],
    )
    failed = dict(
        ExternalApiError.objects.order_by().values_list("service").annotate(n=Sum("count"))
    )
    for service, _label in ExternalApiError.SERVICE_CHOICES:
        calls.add_metric([service], failed.get(service) or 0)
    return [issues, telegram, fly, calls]


class DatabaseCollector:
    """Reads the figures at scrape time (prometheus_client calls ``collect`` per scrape)."""

    def collect(self):
        now = timezone.now()
        yield from _queue(now)
        yield from _jobs()
        yield from _workers()
        yield from _api_errors()
        yield from _outbox()


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(DatabaseCollector())


def authorized(request) -> bool:
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        return True
    expected = settings.METRICS_TOKEN
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    return (
        bool(expected)
        and scheme == "Bearer"
        and hmac.compare_digest(offered.strip().encode(), expected.encode())
    )


@never_cache
@require_GET
def metrics(request):
    if not authorized(request):
        response = JsonResponse(
            {
                "error": "unauthorized",
                "detail": "A staff session or the metrics token is required.",
            },
            status=401,
        )
        response["WWW-Authenticate"] = "Bearer"
        return response
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
