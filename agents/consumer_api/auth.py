"""Who is calling: the ``Api-Key`` header, the key's scope (tenant, agents), read/write mode
and per-key throttling (SPEC §15, §23)."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions, throttling
from rest_framework_api_key.permissions import KeyParser

from agents.consumer_api.models import ApiKey
from agents.models import AgentProfile

# last_used_at is written at most this often per key: one UPDATE a minute, not per request.
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


class ApiKeyPrincipal:
    """Stands in for a user (a key is never a Django user)."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, api_key: ApiKey):
        self.api_key = api_key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Api-Key"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        raw = KeyParser().get_from_authorization(request)
        if not raw:
            raise exceptions.AuthenticationFailed("Missing or malformed Api-Key header.")
        try:
            api_key = ApiKey.objects.get_from_key(raw)
        except ApiKey.DoesNotExist:
            api_key = None
        if api_key is None or api_key.has_expired:
            raise exceptions.AuthenticationFailed("Unknown, expired or revoked API key.")
        now = timezone.now()
        if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
            api_key.last_used_at = now
        return (ApiKeyPrincipal(api_key), api_key)

    def authenticate_header(self, request):
        return self.keyword


class HasApiKey(permissions.BasePermission):
    """A key is needed for everything; a ``read`` key may not write (403)."""

    message = "This API key is read-only."

    def has_permission(self, request, view):
        if not isinstance(request.user, ApiKeyPrincipal):
            raise exceptions.NotAuthenticated("An Api-Key header is required.")
        if request.method in permissions.SAFE_METHODS:
            return True
        return not request.user.api_key.read_only


class ApiKeyRateThrottle(throttling.SimpleRateThrottle):
    """Requests per key (``CONSUMER_API_THROTTLE_RATE``, e.g. ``1200/min``)."""

    scope = "consumer_api"

    def get_rate(self):
        return getattr(settings, "CONSUMER_API_THROTTLE_RATE", "1200/min")

    def get_cache_key(self, request, view):
        if not isinstance(request.user, ApiKeyPrincipal):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.api_key.pk}


def scoped_agents(api_key: ApiKey):
    """The agents this key may see: its tenant's, narrowed to the key's list when it has one."""
    agents = AgentProfile.objects.filter(tenant_id=api_key.tenant_id)
    if api_key.agents.exists():
        agents = agents.filter(pk__in=api_key.agents.values("pk"))
    return agents
