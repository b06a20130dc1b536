"""Settings for ``manage.py run_worker`` (chosen by manage.py for that command).

A worker runs agent code, so it must not hold anything of the server's (SPEC §23): this
module stands alone. It does not import ``config.settings``, reads no ``.env`` file and no
database, key or token variable; its SECRET_KEY is random per process (Django wants one; the
worker signs nothing). The only outside inputs are the worker's own ``AGENT_FACTORY_*``
variables (read by the command) and ``TELEGRAM_API_BASE_URL``.
"""

import os
import secrets
from pathlib import Path

from config.logging_filters import base_logging

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = secrets.token_urlsafe(50)
DEBUG = False
ALLOWED_HOSTS: list[str] = []

# Only what the command needs to be found and its imports to load; no database at all.
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "agents",
    "workers",
]
DATABASES: dict = {}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

TELEGRAM_API_BASE_URL = (
    os.environ.get("TELEGRAM_API_BASE_URL") or "https://api.telegram.org"
).rstrip("/")

LOGGING = base_logging("INFO")
