"""Operations endpoints, mounted at the site root (probes are configured by path)."""

from django.urls import path

from ops import health, metrics

app_name = "ops"

urlpatterns = [
    path("healthz/", health.healthz, name="healthz"),
    path("readyz/", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("metrics/", metrics.metrics),
]
