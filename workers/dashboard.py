"""The admin index's queue dashboard: depth by status, oldest wait, workers, recent errors."""

from __future__ import annotations

import datetime as dt

from django.db.models import Count, Min
from django.utils import timezone

from workers.models import Message, Worker


def dashboard_data(now: dt.datetime | None = None) -> dict:
    """Queue depth by status, oldest waiting message, workers by status, recent errors."""
    now = now or timezone.now()
    by_status = dict(Message.objects.values_list("status").annotate(n=Count("id")))
    oldest = Message.objects.ready(now).aggregate(oldest=Min("scheduled_for"))["oldest"]
    workers = dict(Worker.objects.values_list("status").annotate(n=Count("id")))
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
        "workers": [{"status": s, "count": workers.get(s, 0)} for s, _ in Worker.STATUS_CHOICES],
        "dead_letters": by_status.get(Message.DEAD_LETTER, 0),
        "recent_errors": list(
            Message.objects.exclude(last_error="")
            .order_by("-id")
            .values("id", "agent_key", "status", "last_error")[:5]
        ),
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
        data.update(queue=[], oldest_wait_seconds=None, dead_letters=None, recent_errors=[])
    if not can_view["worker"]:
        data["workers"] = []
    return data
