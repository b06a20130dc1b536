"""Operations (SPEC §24): health and readiness probes, Prometheus metrics, request ids.

The top floor: it reads every app's tables for the metrics, and no app imports it."""

from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Operations"
