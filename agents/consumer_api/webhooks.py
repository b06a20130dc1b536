"""A key's event webhook settings (SPEC §15): its URL and its signing secret, one place for
``create_api_key``, ``set_api_key_webhook`` and the admin.

The secret is generated here, stored encrypted in the secret store
(``consumer_api.webhookSecret.<key prefix>``) and returned once, to be shown once.
"""

from __future__ import annotations

import secrets
from ipaddress import ip_address
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction

from agents.audit import record_audit
from agents.consumer_api.models import ApiKey
from agents.secret_refs import api_key_webhook_secret_ref
from agents.secret_store import has_active_secret, import_secret

LOOPBACK_NAMES = {"localhost"}


class WebhookUrlError(ValueError):
    """A webhook URL we will not post to."""


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def validate_webhook_url(url: str) -> str:
    """The URL, stripped; https with a host, or http to loopback where allowed (DEBUG, tests)."""
    url = (url or "").strip()
    if not url:
        return ""
    if len(url) > 500:
        raise WebhookUrlError("The webhook URL must be at most 500 characters.")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        raise WebhookUrlError("The webhook URL is not a valid URL.") from None
    if not host:
        raise WebhookUrlError("The webhook URL needs a host, e.g. https://example.com/hooks.")
    if parts.username or parts.password:
        raise WebhookUrlError("The webhook URL must not carry credentials.")
    if parts.scheme == "https":
        return url
    allow_http = getattr(settings, "CONSUMER_API_WEBHOOK_ALLOW_HTTP_LOOPBACK", False)
    if parts.scheme == "http" and allow_http and _is_loopback(host):
        return url
    raise WebhookUrlError(
        "The webhook URL must start with https:// (plain http only to a loopback host "
        "in development)."
    )


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def store_secret(api_key: ApiKey, *, actor: str) -> str:
    """A fresh signing secret for the key, stored encrypted; the plaintext is returned once."""
    secret = new_secret()
    import_secret(api_key_webhook_secret_ref(api_key.prefix), secret, actor=actor)
    return secret


def set_webhook(
    api_key: ApiKey, url: str, *, actor: str, rotate_secret: bool = False
) -> str | None:
    """Set (or, with an empty URL, clear) the key's webhook URL. A signing secret is made
    when the key gets a URL and has none yet, or when ``rotate_secret``; it is returned
    (shown once), else None. Audited; the secret never is."""
    url = validate_webhook_url(url)
    if api_key.revoked:
        raise WebhookUrlError("This API key is revoked.")
    with transaction.atomic():
        ApiKey.objects.filter(pk=api_key.pk).update(webhook_url=url)
        api_key.webhook_url = url
        secret = None
        ref = api_key_webhook_secret_ref(api_key.prefix)
        if url and (rotate_secret or not has_active_secret(ref)):
            secret = store_secret(api_key, actor=actor)
        record_audit(
            actor,
            "consumer_api.set_webhook",
            api_key,
            webhook_url=url,
            secret_rotated=secret is not None,
        )
    return secret
