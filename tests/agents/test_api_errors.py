"""The one API error shape, whatever raised it (SPEC §19)."""

from django.core.exceptions import PermissionDenied
from django.db import OperationalError
from django.http import Http404

from agents.api_errors import LeaseLost, exception_handler


def test_django_and_drf_errors_share_one_shape():
    cases = [
        (Http404("gone"), 404, "not_found"),
        (PermissionDenied(), 403, "forbidden"),
        (LeaseLost(), 409, "lease_lost"),
        (OperationalError("db down"), 503, "unavailable"),
    ]
    for exc, status, code in cases:
        response = exception_handler(exc, {})
        assert response.status_code == status
        assert response.data["error"] == code and response.data["detail"]
