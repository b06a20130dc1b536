"""The OpenAPI schema, for staff sessions and worker tokens only (SPEC §23).

The schema maps every worker endpoint and its payloads; it is documentation for the people
and programs that use the API, not for anonymous visitors.
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.views import SpectacularAPIView
from rest_framework import permissions
from rest_framework.authentication import SessionAuthentication

from workers.api.auth import WorkerPrincipal, WorkerTokenAuthentication


class StaffOrWorker(permissions.BasePermission):
    def has_permission(self, request, view):
        user = request.user
        if isinstance(user, WorkerPrincipal):
            return True
        return bool(user and user.is_active and user.is_staff)


class SchemaView(SpectacularAPIView):
    # The bearer scheme first: an anonymous request then gets 401 with WWW-Authenticate.
    authentication_classes = [WorkerTokenAuthentication, SessionAuthentication]
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
