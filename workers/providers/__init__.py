"""Worker providers: where worker processes run. ``workers`` never imports ``fly``: the Fly
provider is loaded by dotted path from settings."""

from __future__ import annotations

from django.conf import settings
from django.utils.module_loading import import_string

from workers.providers.base import (
    Provider,
    ProviderError,
    SpawnFailed,
    SpawnRequest,
    SpawnResult,
)

__all__ = [
    "Provider",
    "ProviderError",
    "SpawnFailed",
    "SpawnRequest",
    "SpawnResult",
    "get_provider",
]


def get_provider(kind: str) -> Provider:
    path = settings.AGENT_FACTORY_PROVIDERS.get(kind)
    if path is None:
        raise ProviderError(f"Unknown worker provider '{kind}'.")
    return import_string(path)()
