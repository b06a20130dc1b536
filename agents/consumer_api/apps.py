"""The consumer API app (label ``consumer_api``): API keys, idempotency records, /api/v1/.

An app of its own, like ``agents.pushing``: the product layer above workers and telegram;
nothing below imports it.
"""

from django.apps import AppConfig


class ConsumerApiConfig(AppConfig):
    name = "agents.consumer_api"
    label = "consumer_api"
    verbose_name = "Consumer API"
    default_auto_field = "django.db.models.BigAutoField"
