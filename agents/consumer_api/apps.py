"""The consumer API app (label ``consumer_api``): API keys, idempotency records, /api/v1/,
event webhooks to the host app.

An app of its own, like ``agents.pushing``: the product layer above workers and telegram;
nothing below imports it (they report events through ``agents.events``, received here).
"""

from django.apps import AppConfig


class ConsumerApiConfig(AppConfig):
    name = "agents.consumer_api"
    label = "consumer_api"
    verbose_name = "Consumer API"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from agents.consumer_api.events import record_event
        from agents.events import host_event

        host_event.connect(record_event, dispatch_uid="consumer_api.record_event")
