"""The workers app's system checks: django-q2, which runs its schedules and triggers."""

from __future__ import annotations

from django.conf import settings
from django.core import checks


@checks.register()
def check_q_cluster(app_configs, **kwargs):
    conf = settings.Q_CLUSTER
    if conf.get("retry", 0) <= conf.get("timeout", 0):
        return [
            checks.Error(
                "Q_CLUSTER retry must be larger than timeout, or a slow task runs twice.",
                id="workers.E001",
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
                id="workers.E002",
            )
        ]
    return []
