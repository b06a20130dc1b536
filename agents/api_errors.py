"""One error shape for every API: ``{"error": "<stable_code>", "detail": "<sentence>"}`` (SPEC §19).

Validation errors add ``"fields"`` with DRF's per-field messages. Domain errors
(``agents.errors.DomainError``: lease lost, caps, refusals) carry their status and code and
are mapped here, once, so views never translate them.
"""

from __future__ import annotations

import logging

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from agents.errors import DomainError

logger = logging.getLogger(__name__)


class ApiError(exceptions.APIException):
    """An API error with a stable code (subclasses set status, code and detail)."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_request"
    default_detail = "The request is not valid."


class Conflict(ApiError):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "The request conflicts with the current state."


class Unavailable(ApiError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "unavailable"
    default_detail = "The service is temporarily unavailable; retry later."


_CODE_BY_STATUS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    415: "unsupported_media_type",
    429: "throttled",
    503: "unavailable",
}


def error_response(code: str, detail: str, http_status: int, **extra) -> Response:
    return Response({"error": code, "detail": detail, **extra}, status=http_status)


def exception_handler(exc, context):
    from django.db import DatabaseError

    if isinstance(exc, DatabaseError) and not isinstance(exc, exceptions.APIException):
        # The database is down or overloaded: a retryable answer, never a traceback.
        return error_response("unavailable", Unavailable.default_detail, 503)
    from django.core.exceptions import PermissionDenied, RequestDataTooBig
    from django.http import Http404

    from agents.secret_store import SecretUnavailable

    if isinstance(exc, SecretUnavailable):
        # Never the ref or key id to the caller (a worker runs agent code): those go to the
        # server's log for the operator.
        logger.error("Answered 503 secret_unavailable: %s", exc)
        return error_response(
            "secret_unavailable",
            "A secret this request needs cannot be decrypted with the server's keys; an "
            "operator must restore the key or import the secret again.",
            503,
        )
    if isinstance(exc, DomainError):
        # A business rule said no (lease lost, a cap, a refused snapshot): nothing changed.
        set_rollback()
        extra = {} if exc.retry_after is None else {"retry_after": exc.retry_after}
        response = error_response(exc.code, exc.detail, exc.status_code, **extra)
        if exc.retry_after is not None:
            response["Retry-After"] = str(exc.retry_after)
        return response
    if isinstance(exc, RequestDataTooBig):
        return error_response(
            "request_too_large",
            "The request body is larger than this server accepts (DATA_UPLOAD_MAX_MEMORY_SIZE).",
            413,
        )

    # Django's own exceptions carry no .detail: turn them into DRF's first.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        return error_response(
            "invalid_request",
            "The request body failed validation.",
            response.status_code,
            fields=exc.detail,
        )
    if isinstance(exc, ApiError):
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else exc.default_code
    elif isinstance(exc, exceptions.AuthenticationFailed | exceptions.NotAuthenticated):
        code = "unauthorized"
        response.status_code = 401
    else:
        code = _CODE_BY_STATUS.get(response.status_code, "error")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    response.data = {"error": code, "detail": str(detail)}
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        response.data["retry_after"] = max(1, round(exc.wait))  # seconds (SPEC §19)
    return response
