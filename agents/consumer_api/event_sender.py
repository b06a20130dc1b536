"""Sending event webhooks (SPEC §15): each EventDelivery row is POSTed to its key's webhook
URL, signed (``webhook_signature``), after the commit that wrote it and by a schedule as the
safety net. Claiming, backoff, giving up and stuck rows are the outbox's rules
(``agents.delivery_rows``); what differs is the policy: any 2xx is delivered, anything else
(or no answer) is retried with exponential backoff for 24 h, then failed with the reason.

The signature's timestamp is the wall clock of each attempt, so a retry a day later still
falls within the receiver's 5-minute replay window.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import requests
from django.utils import timezone

from agents import delivery_rows
from agents.consumer_api import webhook_signature
from agents.consumer_api.event_models import EventDelivery
from agents.secret_refs import api_key_webhook_secret_ref
from agents.secret_store import SecretUnavailable, get_active_secret_value

logger = logging.getLogger(__name__)

RETRY_FOR = dt.timedelta(hours=24)
MAX_BACKOFF_SECONDS = 3600
STUCK_AFTER = dt.timedelta(seconds=60)
TIMEOUT_SECONDS = 10
MAX_DRAIN_SECONDS = 25.0
BATCH = 100
USER_AGENT = "agent-factory-webhooks/1"


def send_delivery(row: EventDelivery, *, now: dt.datetime | None = None, session=None) -> str:
    """One attempt; returns ``delivered``, ``retry``, ``failed`` or ``skipped``."""
    now = now or timezone.now()
    if not delivery_rows.claim(EventDelivery, row.pk, now):
        return "skipped"  # another sender has it, or it is no longer pending
    attempts = row.attempts + 1
    key = row.api_key
    if key.revoked or not key.webhook_url:
        reason = "the API key was revoked" if key.revoked else "the key has no webhook URL"
        delivery_rows.fail(EventDelivery, row.pk, reason)
        return "failed"
    try:
        secret = get_active_secret_value(api_key_webhook_secret_ref(key.prefix))
    except SecretUnavailable:
        secret, error = None, "the webhook secret cannot be decrypted (key ring)"
    else:
        error = "" if secret else "the key has no webhook secret"
    status = None
    if secret:
        status, error = _post(key.webhook_url, row, secret, session or requests)
    if status is not None and 200 <= status < 300:
        EventDelivery.objects.filter(pk=row.pk).update(
            status=EventDelivery.DELIVERED,
            sending_since=None,
            delivered_at=timezone.now(),
            response_status=status,
            last_error="",
        )
        return "delivered"
    if status is not None:
        EventDelivery.objects.filter(pk=row.pk).update(response_status=status)
    outcome = delivery_rows.retry_later(
        EventDelivery,
        row.pk,
        error,
        attempts=attempts,
        now=now,
        give_up=now >= row.give_up_at,
        cap_seconds=MAX_BACKOFF_SECONDS,
    )
    logger.info("Event delivery %s: %s (%s).", row.pk, error, outcome)
    return outcome


def _post(url: str, row: EventDelivery, secret: str, http) -> tuple[int | None, str]:
    body = row.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Agent-Factory-Event": row.event_type,
        "X-Agent-Factory-Event-Id": row.event_id,
        webhook_signature.HEADER: webhook_signature.header_value(secret, body, int(time.time())),
    }
    try:
        response = http.post(
            url, data=body, headers=headers, timeout=TIMEOUT_SECONDS, allow_redirects=False
        )
    except requests.RequestException as exc:
        return None, f"no answer: {type(exc).__name__}"
    if 200 <= response.status_code < 300:
        return response.status_code, ""
    return response.status_code, f"HTTP {response.status_code}"


def due_rows(now: dt.datetime):
    return (
        EventDelivery.objects.filter(status=EventDelivery.PENDING, next_attempt_at__lte=now)
        .select_related("api_key")
        .order_by("next_attempt_at", "id")
    )


def send_deliveries(delivery_ids: list[int], *, now: dt.datetime | None = None) -> dict:
    """Send these rows if due (the after-commit task)."""
    counts: dict[str, int] = {}
    now = now or timezone.now()
    for row in due_rows(now).filter(pk__in=list(delivery_ids)):
        outcome = send_delivery(row, now=now)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def drain_events(
    *, now: dt.datetime | None = None, clock=time.monotonic, max_seconds=MAX_DRAIN_SECONDS
) -> dict:
    """The safety net (schedule, every minute): rows stuck in ``sending`` go back, then due
    rows are sent for up to ``max_seconds``."""
    now = now or timezone.now()
    counts = {"recovered": delivery_rows.recover_stuck(EventDelivery, now, STUCK_AFTER)}
    deadline = clock() + max_seconds
    for row in list(due_rows(now)[:BATCH]):
        if clock() >= deadline:
            break
        outcome = send_delivery(row, now=now)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def retry_deliveries(row_ids, *, actor: str) -> int:
    """Send failed rows again (admin action): attempts and the 24 h clock reset, audited."""
    from django.db import transaction

    from agents.audit import record_audit
    from agents.consumer_api.events import start_sender

    now = timezone.now()
    with transaction.atomic():
        ids = delivery_rows.reset_failed(EventDelivery, row_ids, now, give_up_at=now + RETRY_FOR)
        if ids:
            record_audit(actor, "consumer_api.event_retry", None, row_ids=ids, count=len(ids))
            transaction.on_commit(lambda: start_sender(ids), robust=True)
    return len(ids)
