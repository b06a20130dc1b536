"""Recording host-app events (SPEC §15): the receiver of ``agents.events.host_event`` that
stores one EventDelivery row per API key subscribed to the event, in the transaction of the
change the event reports, and starts the sender once that transaction commits.

Who is subscribed: keys with a webhook URL, not revoked or expired, of the agent's tenant
and whose scope includes the agent (a key narrowed to other agents hears nothing of this
one). An event about every agent (the global budget cap, ``agent_key`` empty) goes to every
subscribed key, each with its own tenant in the body.
"""

from __future__ import annotations

import json
import logging
import uuid

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from agents.consumer_api.event_models import EventDelivery
from agents.consumer_api.event_sender import RETRY_FOR
from agents.consumer_api.models import ApiKey

logger = logging.getLogger(__name__)


def subscribed_keys(agent_key: str, now):
    keys = (
        ApiKey.objects.filter(revoked=False)
        .exclude(webhook_url="")
        .filter(Q(expiry_date__isnull=True) | Q(expiry_date__gt=now))
        .select_related("tenant")
    )
    if agent_key:
        keys = keys.filter(tenant__agents__agent_key=agent_key).filter(
            Q(agents__isnull=True) | Q(agents__agent_key=agent_key)
        )
    return keys.distinct().order_by("pk")


def event_body(event_id: str, event_type: str, now, tenant: str, agent_key: str, user, data):
    """The JSON a host receives (documented in README, "Event webhooks")."""
    body = {
        "id": event_id,
        "type": event_type,
        "created_at": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "tenant": tenant,
        "agent_key": agent_key or None,
        "consumer_user_id": user,
        "data": data,
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def record_event(sender, *, event_type, agent_key, consumer_user_id, data, **kwargs) -> list[int]:
    now = timezone.now()
    keys = list(subscribed_keys(agent_key, now))
    if not keys:
        return []
    event_id = f"evt_{uuid.uuid4().hex}"
    rows = EventDelivery.objects.bulk_create(
        EventDelivery(
            api_key=key,
            event_id=event_id,
            event_type=event_type,
            agent_key=agent_key,
            body=event_body(
                event_id, event_type, now, key.tenant.slug, agent_key, consumer_user_id, data
            ),
            created_at=now,
            next_attempt_at=now,
            give_up_at=now + RETRY_FOR,
        )
        for key in keys
    )
    ids = [row.pk for row in rows]
    if None in ids:  # backends that do not return ids from bulk_create
        ids = list(EventDelivery.objects.filter(event_id=event_id).values_list("pk", flat=True))
    transaction.on_commit(lambda: start_sender(ids), robust=True)
    return ids


def start_sender(delivery_ids: list[int]) -> None:
    """Send these rows now (a django-q2 task; the drain schedule catches what it misses)."""
    async_task(
        "agents.consumer_api.event_sender.send_deliveries",
        delivery_ids,
        task_name="consumer-api-events",
    )
