"""System checks for dangerous configuration (``manage.py check --deploy`` shows them too)."""

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
    if not settings.DEBUG and not url.startswith("https://") and not _is_local(url):
        return [
            checks.Warning(
                "PUBLIC_BASE_URL is not https: Telegram only delivers webhooks to https URLs.",
                id="agents.W003",
            )
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


@checks.register()
def check_q_cluster(app_configs, **kwargs):
    conf = settings.Q_CLUSTER
    if conf.get("retry", 0) <= conf.get("timeout", 0):
        return [
            checks.Error(
                "Q_CLUSTER retry must be larger than timeout, or a slow task runs twice.",
                id="agents.E003",
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


def _is_local(url: str) -> bool:
    return any(host in url for host in ("://127.", "://localhost", "://[::1]"))


@checks.register(checks.Tags.security)
def check_outbound_api_urls(app_configs, **kwargs):
    """The Telegram API carries the bot token in its path and Fly a bearer token: over plain
    http to another host they travel in cleartext. Local fakes (tests, sandbox) are fine."""
    if settings.DEBUG:
        return []
    warnings = []
    for name, check_id in (
        ("TELEGRAM_API_BASE_URL", "agents.W005"),
        ("FLY_API_BASE_URL", "agents.W006"),
    ):
        url = getattr(settings, name)
        if url.startswith("http://") and not _is_local(url):
            warnings.append(
                checks.Warning(
                    f"{name} is plain http with DEBUG off: API tokens would cross the network "
                    "unencrypted.",
                    hint=f"Use https, or leave {name} unset for the real API.",
                    id=check_id,
                )
            )
    return warnings


@checks.register(checks.Tags.security)
def check_telegram_sandbox(app_configs, **kwargs):
    if settings.DEBUG or not settings.AGENT_FACTORY_TELEGRAM_SANDBOX:
        return []
    return [
        checks.Warning(
            "The Telegram sandbox (a fake Bot API at /sandbox/telegram/) is on with DEBUG off: "
            "anyone who can reach the server can read and post sandbox traffic.",
            hint="Set AGENT_FACTORY_TELEGRAM_SANDBOX=0 in production.",
            id="agents.W007",
        )
    ]


@checks.register()
def check_worker_provider(app_configs, **kwargs):
    if settings.WORKER_PROVIDER == "fly" and not settings.FLY_API_TOKEN:
        return [
            checks.Warning(
                "WORKER_PROVIDER is fly but FLY_API_TOKEN is not set: no worker can be started.",
                hint="Set FLY_API_TOKEN, or choose another provider.",
                id="agents.W008",
            )
        ]
    return []


@checks.register()
def check_redis_url(app_configs, **kwargs):
    url = settings.REDIS_URL
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        return [
            checks.Error(
                "REDIS_URL must start with redis://, rediss:// or unix://.",
                hint="Leave REDIS_URL unset to use the database as the django-q2 broker.",
                id="agents.E004",
            )
        ]
    return []
