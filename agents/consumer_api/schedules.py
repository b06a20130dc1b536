"""The consumer API's django-q2 schedules: idempotency records leave after 24 h, and event
webhooks not sent after their commit are sent (the safety net, SPEC §15)."""

SCHEDULES = [
    (
        "expire-idempotency-records",
        "agents.consumer_api.services.expire_idempotency_records",
        "I",
        60,
    ),
    (
        "drain-event-webhooks",
        "agents.consumer_api.event_sender.drain_events",
        "I",
        1,
    ),
]
