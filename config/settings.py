"""Settings for Agent Factory, read from the environment (12-factor).

Every variable is documented in the README's configuration table. With nothing set the
project runs on the embedded default: SQLite under ``var/``, the ORM broker for django-q2
and the local worker provider. ``DEBUG`` is off unless the environment turns it on, and with
``DEBUG`` off the process refuses to start without a ``SECRET_KEY`` and encryption keys.
"""

from __future__ import annotations

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from config.logging_filters import base_logging, redacted_stderr_handler

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("AGENT_FACTORY_VAR_DIR", default=str(BASE_DIR / "var")))

# var/ holds the embedded SQLite database, media and the dev key; a fresh clone lacks it.
VAR_DIR.mkdir(parents=True, exist_ok=True)

env = environ.Env()
# An optional .env file beside manage.py; real environment variables win.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)


def _required_when_not_debug(name: str, message: str) -> str:
    value = env.str(name, default="").strip()
    if not value and not DEBUG:
        raise ImproperlyConfigured(message)
    return value


SECRET_KEY = (
    _required_when_not_debug(
        "SECRET_KEY",
        "SECRET_KEY is not set. With DEBUG off, set SECRET_KEY to a long random string "
        "(for example: python -c 'import secrets; print(secrets.token_urlsafe(50))').",
    )
    or "insecure-dev-only-key-do-not-use-in-production"
)

# Comma-separated base64 32-byte keys; the first encrypts, all decrypt (SPEC §4).
AGENT_FACTORY_ENCRYPTION_KEYS = _required_when_not_debug(
    "AGENT_FACTORY_ENCRYPTION_KEYS",
    "AGENT_FACTORY_ENCRYPTION_KEYS is not set. With DEBUG off, set it to one or more "
    "comma-separated base64-encoded 32-byte keys (for example: "
    "python -c 'import os, base64; print(base64.b64encode(os.urandom(32)).decode())').",
)
# Only used when DEBUG is on and no key is configured: a key generated once, mode 0600.
AGENT_FACTORY_DEV_KEY_FILE = VAR_DIR / "dev-encryption.key"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_q",
    "agents",
    "workers",
    "telegram",
    "fly",
    "ops",  # health, readiness, metrics, request ids (SPEC §24); reads the apps below it
    "agents.pushing",
    "rest_framework_api_key",  # the hashing and Api-Key header behind consumer API keys
    "agents.consumer_api",  # the consumer API (SPEC §15), after the library (admin order)
]

MIDDLEWARE = [
    # First: every later line of the request (and its access log line) carries its id.
    "ops.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # The admin's static files under gunicorn (SPEC §24): from the finders with DEBUG on,
    # from STATIC_ROOT (collectstatic) with it off.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: SQLite under var/ by default, anything django-environ understands otherwise.
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'agent_factory.sqlite3'}")
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions serialise writers up front, so a claim never upgrades a read
    # lock half-way and fails with "database is locked" (SPEC §6.2); WAL lets readers go on.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A bounded psycopg pool per process and CONN_MAX_AGE=0 (SPEC §18): persistent
    # per-thread connections under the threaded server exhausted PostgreSQL's connections.
    from config.db_pool import pool_options, prepare_threshold, register_fork_safety

    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # The pool checks a connection as it hands it out (one empty query), so a database
    # restart costs no failed request.
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"]["pool"] = pool_options(
        min_size=env.int("DATABASE_POOL_MIN_SIZE", default=2),
        max_size=env.int("DATABASE_POOL_MAX_SIZE", default=10),
        # How long a request waits for a free connection before failing.
        timeout=env.float("DATABASE_POOL_TIMEOUT", default=10.0),
    )
    register_fork_safety()
    # The queue's and the webhook's hottest statements run server-bound
    # (workers.sql_cursor.prepared_cursor) and are prepared on a pooled connection after this
    # many runs. Empty turns preparing off (for a pooler in front that cannot keep prepared
    # statements, like PgBouncer < 1.21 in transaction mode); Django's own queries never
    # prepare either way.
    DATABASES["default"]["OPTIONS"]["prepare_threshold"] = prepare_threshold(
        env.str("DATABASE_PREPARE_THRESHOLD", default="5")
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# WhiteNoise serves from here with DEBUG off (collectstatic) and warns when it is missing.
STATIC_ROOT.mkdir(exist_ok=True)
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Snapshot archives and attachments may be large; uploads stream to disk past this size.
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
# The largest body Django reads into memory (forms, JSON, the webhook). Kept small: the admin
# login parses its form before anyone is authenticated. Snapshot uploads stream to storage
# and are bounded by AGENT_FACTORY_SNAPSHOT_MAX_BYTES instead.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=10 * 1024 * 1024)
AGENT_FACTORY_SNAPSHOT_MAX_BYTES = env.int(
    "AGENT_FACTORY_SNAPSHOT_MAX_BYTES", default=2 * 1024 * 1024 * 1024
)

# REST framework
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "agents.api_errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Agent Factory API",
    "DESCRIPTION": "Consumer API (/api/v1/, header `Authorization: Api-Key <key>`), "
    "worker REST API (/api/v1/worker/, bearer worker token) and webhook contracts.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        # Every consumer API field with a description and an example (one glossary).
        "agents.consumer_api.schema_fields.document_consumer_fields",
    ],
}

# Consumer API requests per key (DRF rate: "<n>/<sec|min|hour|day>").
CONSUMER_API_THROTTLE_RATE = env.str("CONSUMER_API_THROTTLE_RATE", default="1200/min")
# Event webhooks go to https URLs only; plain http to a loopback host (127.0.0.1, ::1,
# localhost) is allowed for local development and the tests' receivers.
CONSUMER_API_WEBHOOK_ALLOW_HTTP_LOOPBACK = env.bool(
    "CONSUMER_API_WEBHOOK_ALLOW_HTTP_LOOPBACK", default=DEBUG
)

# Outbound APIs (tests and the embedded run point these at local fakes)
TELEGRAM_API_BASE_URL = env.str("TELEGRAM_API_BASE_URL", default="https://api.telegram.org").rstrip(
    "/"
)
FLY_API_BASE_URL = env.str("FLY_API_BASE_URL", default="https://api.machines.dev/v1").rstrip("/")
FLY_API_TOKEN = env.str("FLY_API_TOKEN", default="")
# The image Fly workers run when the runtime config names none: deploy/worker.Dockerfile,
# pushed to the worker app's registry (README, "Deploying on Fly").
AGENT_FACTORY_WORKER_IMAGE = env.str(
    "AGENT_FACTORY_WORKER_IMAGE", default="registry.fly.io/agent-factory-worker:latest"
)

# Workers
# The initial provider of a fresh database; afterwards RuntimeConfig decides (SPEC §18).
WORKER_PROVIDER = env.str("WORKER_PROVIDER", default="local")
if WORKER_PROVIDER not in {"local", "fly", "none"}:
    raise ImproperlyConfigured(
        f"WORKER_PROVIDER must be one of local, fly, none (got {WORKER_PROVIDER!r})."
    )

# django-q2: schedules and fire-and-forget triggers only, never the agent message queue.
REDIS_URL = env.str("REDIS_URL", default="")
Q_CLUSTER: dict = {
    "name": "agent-factory",
    "workers": env.int("Q_WORKERS", default=2),
    "timeout": 300,
    "retry": 360,  # must exceed timeout, or a slow task runs twice
    "max_attempts": 1,
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 500,
    "label": "Background tasks",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["poll"] = 0.5

# plain lines, or one JSON object per line with the request/agent/... ids (SPEC §24).
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json (got {LOG_FORMAT!r}).")
LOGGING = base_logging(env.str("LOG_LEVEL", default="INFO"), LOG_FORMAT)
# runserver's access log (the sandbox's paths carry the sandbox bot token).
LOGGING["handlers"]["django.server"] = redacted_stderr_handler(LOG_FORMAT)
# Prometheus /metrics: a staff session, or this bearer token (never a worker token).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
LOGGING["loggers"].update(
    {
        "django.db.backends": {"level": "WARNING"},
        "django.server": {"handlers": ["django.server"], "level": "INFO", "propagate": False},
    }
)

# HTTPS (SPEC §23). With DEBUG off: secure cookies, every http request redirected to https
# and HSTS for a year, each with an env opt-out (tests and loopback fakes on plain http use
# SECURE_SSL_REDIRECT=0 and SECURE_HSTS_SECONDS=0).
if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    # Platform health checks probe the process directly over plain http.
    SECURE_REDIRECT_EXEMPT = [r"^healthz/$", r"^readyz/$"]
# Behind a TLS-terminating proxy Django only sees http; X-Forwarded-Proto may be believed only
# when a proxy we trust sets it (and strips the client's), else a client could forge https.
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Idempotent management commands the main job (run_embedded) runs after migrating:
# schedule registration, the Telegram sandbox set-up, …
AGENT_FACTORY_STARTUP_COMMANDS: list[str] = ["register_schedules"]
# Every app's django-q2 schedules (each declares its own in <app>/schedules.py).
AGENT_FACTORY_SCHEDULES = "config.schedules.all_schedules"

# Worker providers by RuntimeConfig.provider_kind (dotted paths: workers never imports fly).
AGENT_FACTORY_PROVIDERS = {
    "local": "workers.providers.local.LocalProvider",
    "fly": "fly.provider.FlyProvider",
    "none": "workers.providers.base.NoProvider",
}
# Tells a user their message failed for good (SPEC §22): called with the message id after
# a job dead-letters (dotted path: workers never imports telegram). Empty: nobody is told.
AGENT_FACTORY_DEAD_LETTER_SINK = "telegram.dead_letters.apologize"
# Writes a completed job's reply as outbox rows inside the completion transaction (SPEC §22;
# an object with write_reply(message, reply, now) -> ids and reply_ids(message_id) -> ids).
AGENT_FACTORY_DELIVERY_SINK = "telegram.delivery.DELIVERY_SINK"
# Who sends outbox rows after commit: "thread" (at once, from the web process) or "task"
# (django-q2); the drain-telegram-outbox schedule is the safety net either way.
AGENT_FACTORY_OUTBOX_SENDER = env.str("AGENT_FACTORY_OUTBOX_SENDER", default="thread")
# "typing…" in the chat while a job runs (SPEC §22); a thread per server process.
AGENT_FACTORY_TYPING_INDICATOR = env.bool("AGENT_FACTORY_TYPING_INDICATOR", default=True)
# The API URL spawned workers call back to (defaults to PUBLIC_BASE_URL).
AGENT_FACTORY_WORKER_API_URL = env.str("AGENT_FACTORY_WORKER_API_URL", default="").rstrip("/")
# Override the local worker command (tests use a stand-in); empty = manage.py run_worker.
AGENT_FACTORY_LOCAL_WORKER_COMMAND: list[str] = []
AGENT_FACTORY_LOCAL_TERM_GRACE_SECONDS = 10.0
# Diagnostics: a file where every reconcile pass appends its begin and end (the scale-out
# test checks from it that no two passes ever overlapped). Empty: off.
AGENT_FACTORY_RECONCILE_TRACE_FILE = env.str("AGENT_FACTORY_RECONCILE_TRACE_FILE", default="")
# Where local workers' data dirs live; empty = <system temp dir>/agent-factory-workers.
# Never inside var/: workers run agent code, var/ holds the database and the dev key.
AGENT_FACTORY_LOCAL_DATA_ROOT = env.str("AGENT_FACTORY_LOCAL_DATA_ROOT", default="")

# Serve a fake Telegram Bot API at /sandbox/telegram/ (point TELEGRAM_API_BASE_URL at it).
AGENT_FACTORY_TELEGRAM_SANDBOX = env.bool("AGENT_FACTORY_TELEGRAM_SANDBOX", default=DEBUG)
# Commands the main job runs once the web server answers (e.g. the sandbox demo set-up).
AGENT_FACTORY_POSTSTART_COMMANDS: list[str] = (
    ["setup_sandbox_demo"] if AGENT_FACTORY_TELEGRAM_SANDBOX else []
)
