"""Bearer worker-token authentication for the worker REST API."""

from __future__ import annotations

from rest_framework import authentication, exceptions, permissions

from agents import log_context
from workers.tokens import authenticate


class WorkerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme != self.keyword or not raw.strip():
            raise exceptions.AuthenticationFailed("Missing or malformed bearer token.")
        worker = authenticate(raw.strip())
        if worker is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked worker token.")
        log_context.bind(worker_id=worker.worker_id)  # every log line of this request
        # DRF wants a user; the worker stands in for one (it is never a Django user).
        return (WorkerPrincipal(worker), raw)

    def authenticate_header(self, request):
        return self.keyword


class WorkerPrincipal:
    is_authenticated = True
    is_anonymous = False

    def __init__(self, worker):
        self.worker = worker


class IsWorker(permissions.BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.user, WorkerPrincipal)
