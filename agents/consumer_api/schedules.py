"""The consumer API's django-q2 schedules: idempotency records leave after 24 h (SPEC §15)."""

SCHEDULES = [
    (
        "expire-idempotency-records",
        "agents.consumer_api.services.expire_idempotency_records",
        "I",
        60,
    ),
]
