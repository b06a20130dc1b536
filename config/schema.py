"""The OpenAPI schema, for staff sessions, worker tokens and consumer API keys (SPEC §23).

The schema maps every worker endpoint and its payloads; it is documentation for the people
and programs that use the API, not for anonymous visitors.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.views import SpectacularAPIView
from rest_framework import permissions
from rest_framework.authentication import SessionAuthentication

from agents.consumer_api.auth import ApiKeyAuthentication, ApiKeyPrincipal
from workers.api.auth import WorkerPrincipal, WorkerTokenAuthentication


class StaffOrWorker(permissions.BasePermission):
    def has_permission(self, request, view):
        user = request.user
        if isinstance(user, WorkerPrincipal | ApiKeyPrincipal):
            return True
        return bool(user and user.is_active and user.is_staff)


class _WorkerTokenOrOther(WorkerTokenAuthentication):
    """A worker token, leaving other schemes (``Api-Key``) to the next authenticator."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if header and not header.startswith(self.keyword + " "):
            return None
        return super().authenticate(request)


class SchemaView(SpectacularAPIView):
    # The bearer scheme first: an anonymous request then gets 401 with WWW-Authenticate.
    authentication_classes = [
        _WorkerTokenOrOther,
        ApiKeyAuthentication,
        SessionAuthentication,
    ]
    permission_classes = [StaffOrWorker]


class WorkerTokenScheme(OpenApiAuthenticationExtension):
    """Documents the worker bearer token in the schema (and keeps drf-spectacular's
    "could not resolve authenticator" warnings out of ``check --deploy``)."""

    target_class = WorkerTokenAuthentication
    name = "workerToken"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(
            header_name="AUTHORIZATION", token_prefix="Bearer"
        )


class ConsumerApiKeyScheme(OpenApiAuthenticationExtension):
    """Documents the consumer API's ``Authorization: Api-Key <key>`` header (SPEC §15)."""

    target_class = ApiKeyAuthentication
    name = "consumerApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>`: a key created in the admin or with create_api_key.",
        }
