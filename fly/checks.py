"""The fly app's system checks: the Machines API URL and its token."""

from __future__ import annotations

from django.conf import settings
from django.core import checks

from agents.checks import plain_http_warning


@checks.register(checks.Tags.security)
def check_machines_api_url(app_configs, **kwargs):
    # The Machines API carries a bearer token.
    return plain_http_warning("FLY_API_BASE_URL", "fly.W001")


@checks.register()
def check_worker_provider(app_configs, **kwargs):
    if settings.WORKER_PROVIDER == "fly" and not settings.FLY_API_TOKEN:
        return [
            checks.Warning(
                "WORKER_PROVIDER is fly but FLY_API_TOKEN is not set: no worker can be started.",
                hint="Set FLY_API_TOKEN, or choose another provider.",
                id="fly.W002",
            )
        ]
    return []
