"""Settings for ``manage.py run_worker``: the worker never touches the database or the
secret store (it talks only to the worker API), so it must start without the server's
SECRET_KEY and encryption keys, e.g. on a Fly machine."""

import base64
import os
import secrets

os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault(
    "AGENT_FACTORY_ENCRYPTION_KEYS", base64.b64encode(secrets.token_bytes(32)).decode()
)

from config.settings import *  # noqa: E402,F403
