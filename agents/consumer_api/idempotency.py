"""``Idempotency-Key`` for writes (SPEC §15): the first answer is kept 24 h and replayed;
the same key with a different request answers 409 ``idempotency_conflict``."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.response import Response

from agents.api_errors import Conflict
from agents.consumer_api.models import ApiKey, IdempotencyRecord

RETENTION = dt.timedelta(hours=24)
HEADER = "HTTP_IDEMPOTENCY_KEY"


class IdempotencyConflict(Conflict):
    default_code = "idempotency_conflict"
    default_detail = "This Idempotency-Key was already used with a different request."


def fingerprint(request) -> str:
    body = json.dumps(request.data, sort_keys=True, default=str)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def idempotent(request, api_key: ApiKey, action) -> Response:
    """Run ``action()`` (returns (status, data)) once per key; replay its answer afterwards."""
    key = (request.META.get(HEADER) or "").strip()[:255]
    if not key:
        status, data = action()
        return Response(data, status=status)
    now = timezone.now()
    IdempotencyRecord.objects.filter(
        api_key=api_key, key=key, created_at__lt=now - RETENTION
    ).delete()
    digest = fingerprint(request)
    existing = IdempotencyRecord.objects.filter(api_key=api_key, key=key).first()
    if existing is None:
        try:
            with transaction.atomic():
                status, data = action()
                IdempotencyRecord.objects.create(
                    api_key=api_key,
                    key=key,
                    fingerprint=digest,
                    status_code=status,
                    response=data,
                    created_at=now,
                )
            return Response(data, status=status)
        except IntegrityError:  # the same key raced in: answer with the winner's record
            existing = IdempotencyRecord.objects.filter(api_key=api_key, key=key).first()
            if existing is None:
                raise
    if existing.fingerprint != digest:
        raise IdempotencyConflict()
    response = Response(existing.response, status=existing.status_code)
    response["Idempotent-Replayed"] = "true"
    return response
