"""The one API error shape, whatever raised it (SPEC §19)."""

from django.core.exceptions import PermissionDenied
from django.db import OperationalError
from django.http import Http404

from agents.api_errors import exception_handler
from agents.errors import DomainError
from workers.errors import LeaseLost
from workers.snapshots import SnapshotError


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


class Unpaid(DomainError):
    status_code = 402
    code = "unpaid"
    default_detail = "Pay first."


def test_a_domain_error_is_answered_with_its_own_status_and_code():
    """Business code raises; the handler maps once (views have no try/except)."""
    response = exception_handler(Unpaid(), {})
    assert (response.status_code, response.data) == (
        402,
        {"error": "unpaid", "detail": "Pay first."},
    )
    response = exception_handler(Unpaid("Pay 3 USD first."), {})
    assert response.data == {"error": "unpaid", "detail": "Pay 3 USD first."}
    assert not response.has_header("Retry-After")


def test_a_throttled_domain_error_says_when_to_retry():
    response = exception_handler(SnapshotError("throttled", "Slow down.", retry_after=7), {})
    assert response.status_code == 429 and response["Retry-After"] == "7"
    assert response.data == {"error": "throttled", "detail": "Slow down.", "retry_after": 7}


def test_an_unmapped_exception_is_left_to_django():
    assert exception_handler(ValueError("bug"), {}) is None
