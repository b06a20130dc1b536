"""The base of every consumer API view: key auth, scope lookups, throttling, pagination."""

from __future__ import annotations

import re

from django.http import Http404
from rest_framework import filters, generics
from rest_framework.exceptions import ValidationError

from agents.consumer_api.auth import (
    ApiKeyAuthentication,
    ApiKeyRateThrottle,
    HasApiKey,
    scoped_agents,
)
from agents.consumer_api.idempotency import idempotent
from agents.consumer_api.pagination import ConsumerCursorPagination
from agents.consumer_api.schema import ConsumerAutoSchema

ROW_ID = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() accepts "²"


def row_id(value: str) -> int | None:
    """A path segment as a row id, or None (answered 404 by the caller)."""
    return int(value) if ROW_ID.fullmatch(value) else None


def json_object(request) -> dict:
    """The request body as an object (a PATCH merges it over the stored fields); an array
    or a scalar is a 400, not a TypeError."""
    if not isinstance(request.data, dict):
        raise ValidationError({"non_field_errors": ["The body must be a JSON object."]})
    return request.data


class ConsumerView(generics.GenericAPIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasApiKey]
    throttle_classes = [ApiKeyRateThrottle]
    pagination_class = ConsumerCursorPagination
    schema = ConsumerAutoSchema()
    # ``?ordering=field`` or ``-field`` among ``ordering_fields``; the default keeps newest first.
    filter_backends = [filters.OrderingFilter]
    ordering_fields = ["id"]
    ordering = ["-id"]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        # PostgreSQL refuses NUL in text: such a value can match nothing, so say so here
        # instead of letting the database error answer 503.
        bad = sorted(k for k, v in request.query_params.items() if "\x00" in v)
        if bad:
            raise ValidationError({k: ["Null characters are not allowed."] for k in bad})
        if any("\x00" in str(v) for v in kwargs.values()):
            raise Http404("Not found.")

    @property
    def api_key(self):
        return self.request.auth

    def agents(self):
        """Agents in the key's scope; everything else answers 404 (it does not exist here)."""
        return scoped_agents(self.api_key)

    def agent_or_404(self, agent_key: str):
        """An agent outside the key's scope answers 404 even when a body names it (SPEC §15)."""
        agent = self.agents().select_related("tenant").filter(agent_key=agent_key).first()
        if agent is None:
            raise Http404(f"Agent '{agent_key}' not found.")
        return agent

    def idempotent_write(self, request, action):
        """Validate the body with ``serializer_class``, then answer ``action(validated_data)``
        (a (status, data) pair) once per Idempotency-Key (SPEC §15)."""
        body = self.serializer_class(data=request.data)
        body.is_valid(raise_exception=True)
        return idempotent(request, self.api_key, lambda: action(body.validated_data))

    def paginated(self, queryset, serializer_class):
        page = self.paginate_queryset(self.filter_queryset(queryset))
        return self.get_paginated_response(serializer_class(page, many=True).data)
