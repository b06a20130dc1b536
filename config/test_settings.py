"""Settings for the test suite: fixed keys, fast hashing, django-q2 tasks run inline."""

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-" + "x" * 20)
# A fixed, throwaway test key (base64 of 32 bytes), so tests never touch var/.
os.environ.setdefault(
    "AGENT_FACTORY_ENCRYPTION_KEYS", "dGVzdC1rZXktMzItYnl0ZXMtbG9uZy0wMTIzNDU2Nzg="
)
os.environ.setdefault("TELEGRAM_API_BASE_URL", "http://telegram.test")
os.environ.setdefault("FLY_API_BASE_URL", "http://fly.test/v1")
os.environ.setdefault("PUBLIC_BASE_URL", "https://factory.test")
# The documented opt-outs (SPEC §23): the suite's clients, live servers and the processes it
# starts speak plain http to loopback; they must get answers, not redirects to https.
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("SECURE_HSTS_SECONDS", "0")
# No autoscaling unless a test asks for a provider: with tasks run inline, every enqueue
# would otherwise spawn real local worker processes pointed at an API that is not there.
os.environ.setdefault("WORKER_PROVIDER", "none")

from config.settings import *  # noqa: E402,F403
from config.settings import Q_CLUSTER, VAR_DIR  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
Q_CLUSTER = {**Q_CLUSTER, "sync": True}
MEDIA_ROOT = VAR_DIR / "test-media" / str(os.getpid())
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
AGENT_FACTORY_TELEGRAM_SANDBOX = True
# No "typing…" thread in tests (it would outlive a test's database); tests tick it by hand.
AGENT_FACTORY_TYPING_INDICATOR = False
# Outbox senders as (synchronous) tasks: a test sees the rows sent when its request returns.
AGENT_FACTORY_OUTBOX_SENDER = "task"
# The tests' webhook receivers listen on http://127.0.0.1:<port>.
CONSUMER_API_WEBHOOK_ALLOW_HTTP_LOOPBACK = True

# End-to-end tests run a live server thread and real worker processes: SQLite then needs a
# file database (each thread its own connection), not the shared in-memory one.
from config.settings import DATABASES  # noqa: E402

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}

# The suite runs with DEBUG off against fake APIs on plain http and with the sandbox on, on
# purpose; these warnings are about production and would only clutter command output.
SILENCED_SYSTEM_CHECKS = ["telegram.W002", "telegram.W003", "fly.W001"]
