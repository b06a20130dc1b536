"""The telegram app's system checks: the webhook URL, the Bot API URL and the sandbox."""

from __future__ import annotations

from django.conf import settings
from django.core import checks

from agents.checks import is_local_url, plain_http_warning


@checks.register(checks.Tags.security)
def check_webhook_base_url(app_configs, **kwargs):
    url = settings.PUBLIC_BASE_URL  # its scheme is agents.E002's
    if not settings.DEBUG and url.startswith("http://") and not is_local_url(url):
        return [
            checks.Warning(
                "PUBLIC_BASE_URL is not https: Telegram only delivers webhooks to https URLs.",
                id="telegram.W001",
            )
        ]
    return []


@checks.register(checks.Tags.security)
def check_bot_api_url(app_configs, **kwargs):
    # The Bot API carries the bot token in its path.
    return plain_http_warning("TELEGRAM_API_BASE_URL", "telegram.W002")


@checks.register(checks.Tags.security)
def check_telegram_sandbox(app_configs, **kwargs):
    if settings.DEBUG or not settings.AGENT_FACTORY_TELEGRAM_SANDBOX:
        return []
    return [
        checks.Warning(
            "The Telegram sandbox (a fake Bot API at /sandbox/telegram/) is on with DEBUG off: "
            "anyone who can reach the server can read and post sandbox traffic.",
            hint="Set AGENT_FACTORY_TELEGRAM_SANDBOX=0 in production.",
            id="telegram.W003",
        )
    ]
