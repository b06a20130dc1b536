from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from config.schema import SchemaView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SchemaView.as_view(), name="api-schema"),
    path("api/v1/worker/", include("workers.urls")),
    path("api/v1/", include("agents.consumer_api.urls")),
    path("telegram/", include("telegram.urls")),
    path("", include("ops.urls")),  # /healthz/, /readyz/, /metrics
]

if settings.AGENT_FACTORY_TELEGRAM_SANDBOX:
    # The offline fake of the Telegram Bot API (see telegram/sandbox.py).
    urlpatterns.append(path("sandbox/telegram/", include("telegram.sandbox")))
