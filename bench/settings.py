"""Settings for benchmark servers: the real app plus two baseline endpoints (bench/urls.py)."""

import os

os.environ.setdefault("SECRET_KEY", "bench-secret-key-" + "x" * 40)
os.environ.setdefault(
    "AGENT_FACTORY_ENCRYPTION_KEYS", "YmVuY2gta2V5LTMyLWJ5dGVzLWxvbmctMDEyMzQ1Njc="
)

from config.settings import *  # noqa: E402,F403

ROOT_URLCONF = "bench.urls"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
SECURE_PROXY_SSL_HEADER = None
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"handlers": [], "level": "ERROR"},
}
