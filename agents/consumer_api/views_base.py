"""The base of every consumer API view: key auth, scope lookups, throttling, pagination."""

from __future__ import annotations

from django.http import Http404
from rest_framework import filters, generics

from agents.consumer_api.auth import (
    ApiKeyAuthentication,
    ApiKeyRateThrottle,
    HasApiKey,
    scoped_agents,
)
from agents.consumer_api.pagination import ConsumerCursorPagination
from agents.consumer_api.schema import ConsumerAutoSchema


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

    def paginated(self, queryset, serializer_class):
        page = self.paginate_queryset(self.filter_queryset(queryset))
        return self.get_paginated_response(serializer_class(page, many=True).data)
