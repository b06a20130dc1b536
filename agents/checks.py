"""The agents app's system checks (encryption keys, public URL, hosts); each app registers
its own in its ``checks.py`` from ``AppConfig.ready`` (``manage.py check --deploy`` shows
them too)."""

from __future__ import annotations

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured


@checks.register(checks.Tags.security)
def check_encryption_keys(app_configs, **kwargs):
    from agents.secret_store import parse_keys

    errors = []
    try:
        keys = parse_keys(settings.AGENT_FACTORY_ENCRYPTION_KEYS)
    except ImproperlyConfigured as exc:
        return [
            checks.Error(
                str(exc),
                id="agents.E001",
                hint="Each key is base64 of 32 random bytes, comma-separated.",
            )
        ]
    if len(set(keys)) != len(keys):
        errors.append(
            checks.Warning(
                "AGENT_FACTORY_ENCRYPTION_KEYS lists the same key twice.", id="agents.W002"
            )
        )
    return errors


@checks.register(checks.Tags.security)
def check_public_base_url(app_configs, **kwargs):
    url = settings.PUBLIC_BASE_URL
    if not url.startswith(("http://", "https://")):
        return [
            checks.Error("PUBLIC_BASE_URL must start with http:// or https://.", id="agents.E002")
        ]
    return []


@checks.register(checks.Tags.security)
def check_debug_hosts(app_configs, **kwargs):
    if not settings.DEBUG and "*" in settings.ALLOWED_HOSTS:
        return [
            checks.Warning(
                "ALLOWED_HOSTS contains '*' with DEBUG off: any Host header is accepted.",
                id="agents.W004",
            )
        ]
    return []


@checks.register(checks.Tags.security, deploy=True)
def check_dev_key_in_use(app_configs, **kwargs):
    """Only under ``check --deploy``: the embedded default uses the dev key on purpose."""
    from agents.secret_store import parse_keys

    try:
        keys = parse_keys(settings.AGENT_FACTORY_ENCRYPTION_KEYS)
    except ImproperlyConfigured:
        return []  # reported by agents.E001
    if keys:
        return []
    return [
        checks.Warning(
            "No AGENT_FACTORY_ENCRYPTION_KEYS set: secrets are encrypted with a development "
            f"key kept in {settings.AGENT_FACTORY_DEV_KEY_FILE}.",
            hint="Set AGENT_FACTORY_ENCRYPTION_KEYS before storing real secrets.",
            id="agents.W001",
        )
    ]


def is_local_url(url: str) -> bool:
    return any(host in url for host in ("://127.", "://localhost", "://[::1]"))


def plain_http_warning(name: str, check_id: str) -> list[checks.Warning]:
    """Setting ``name`` (an outside API's base URL) is plain http to another host with DEBUG
    off: the token it carries would travel in cleartext. Local fakes (tests, sandbox) are
    fine. The telegram and fly apps check their own URL with it."""
    url = getattr(settings, name)
    if settings.DEBUG or not url.startswith("http://") or is_local_url(url):
        return []
    return [
        checks.Warning(
            f"{name} is plain http with DEBUG off: API tokens would cross the network unencrypted.",
            hint=f"Use https, or leave {name} unset for the real API.",
            id=check_id,
        )
    ]
