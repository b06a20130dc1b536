"""Bearer worker-token authentication for the worker REST API."""

from __future__ import annotations

from rest_framework import authentication, exceptions, permissions

from agents import log_context
from workers import tokens

UNKNOWN_TOKEN = "Unknown or revoked worker token."


class WorkerTokenAuthentication(authentication.BaseAuthentication):
    """The request's worker, found by its token before the view runs."""

    keyword = "Bearer"

    def __init__(self, *, deferred: bool = False):
        # Deferred, for the calls that check the token in their own statements (claim,
        # heartbeat, complete: ``WorkerView.by_token``): the token's owner is looked up
        # only when the view asks for ``worker``, which answers 401 then, as it would here.
        self.deferred = deferred

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme != self.keyword or not raw.strip():
            raise exceptions.AuthenticationFailed("Missing or malformed bearer token.")
        token = tokens.parse(raw.strip())
        if token is None:
            raise exceptions.AuthenticationFailed(UNKNOWN_TOKEN)
        principal = WorkerPrincipal(token)
        if not self.deferred:
            principal.worker  # noqa: B018 (finds the worker now: 401 before the view runs)
        # DRF wants a user; the worker stands in for one (it is never a Django user).
        return (principal, raw)

    def authenticate_header(self, request):
        return self.keyword


class WorkerPrincipal:
    is_authenticated = True
    is_anonymous = False

    def __init__(self, token: tokens.WorkerToken):
        self.token = token
        self._worker = None

    @property
    def worker(self):
        """The token's owner (looked up once): 401 when the token is unknown or revoked."""
        if self._worker is None:
            worker = tokens.owner(self.token)
            if worker is None:
                raise exceptions.AuthenticationFailed(UNKNOWN_TOKEN)
            self._worker = worker
            self.known(worker.worker_id)
        return self._worker

    @staticmethod
    def known(worker_id: str) -> None:
        """The token's owner is ``worker_id``: every log line of this request names it."""
        log_context.bind(worker_id=worker_id)


class IsWorker(permissions.BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.user, WorkerPrincipal)
