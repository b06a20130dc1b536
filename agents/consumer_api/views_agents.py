"""Agents in scope, one agent, its readiness; a user's bindings and overview (SPEC §15)."""

from __future__ import annotations

from django.db.models import Sum
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from agents.consumer_api.serializers import (
    AgentSerializer,
    BindingSerializer,
    PairingSerializer,
    QueueItemSerializer,
    ReadinessSerializer,
    UserOverviewSerializer,
)
from agents.consumer_api.serializers_templates import UserAgentStatsSerializer
from agents.consumer_api.views_base import ConsumerView
from agents.pushing.stats import user_agent_stats
from telegram.models import IdentityBinding, PairingCode
from telegram.readiness import readiness
from workers.models import JobUsage, Message

BOOL_CHOICES = {"true": True, "false": False, "1": True, "0": False}


def bool_param(request, name: str):
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() not in BOOL_CHOICES:
        raise serializers.ValidationError({name: ["Must be true or false."]})
    return BOOL_CHOICES[raw.lower()]


class AgentList(ConsumerView):
    serializer_class = AgentSerializer
    ordering_fields = ["agent_key", "created_at", "id"]
    ordering = ["agent_key"]

    @extend_schema(
        parameters=[OpenApiParameter("enabled", bool, description="Only enabled/disabled.")],
        responses=AgentSerializer(many=True),
        summary="Agents in this key's scope",
    )
    def get(self, request):
        agents = self.agents().select_related("tenant", "bot")
        enabled = bool_param(request, "enabled")
        if enabled is not None:
            agents = agents.filter(enabled=enabled)
        return self.paginated(agents, AgentSerializer)


class AgentDetail(ConsumerView):
    serializer_class = AgentSerializer

    def get(self, request, agent_key):
        return Response(AgentSerializer(self.agent_or_404(agent_key)).data)


class AgentReadiness(ConsumerView):
    serializer_class = ReadinessSerializer

    @extend_schema(summary="The agent's Telegram readiness checklist and next step (SPEC §5.1)")
    def get(self, request, agent_key):
        agent = self.agent_or_404(agent_key)
        return Response(ReadinessSerializer(readiness(agent.agent_key)).data)


class UserAgents(ConsumerView):
    """A user's bindings to agents in scope, newest first."""

    serializer_class = BindingSerializer
    ordering_fields = ["bound_at", "id"]

    @extend_schema(
        parameters=[OpenApiParameter("active", bool, description="Only active bindings.")],
        responses=BindingSerializer(many=True),
        summary="A consumer user's bindings",
    )
    def get(self, request, consumer_user_id):
        bindings = IdentityBinding.objects.select_related("agent").filter(
            consumer_user_id=consumer_user_id, agent__in=self.agents()
        )
        if bool_param(request, "active"):
            bindings = bindings.filter(status=IdentityBinding.ACTIVE)
        elif bool_param(request, "active") is False:
            bindings = bindings.exclude(status=IdentityBinding.ACTIVE)
        return self.paginated(bindings, BindingSerializer)


class UserOverview(ConsumerView):
    serializer_class = UserOverviewSerializer

    @extend_schema(summary="Active agent, pairing state, last message, usage this month")
    def get(self, request, consumer_user_id):
        agents = self.agents()
        binding = (
            IdentityBinding.objects.select_related("agent")
            .filter(consumer_user_id=consumer_user_id, agent__in=agents)
            .filter(status=IdentityBinding.ACTIVE)
            .order_by("-bound_at")
            .first()
        )
        pairing = (
            PairingCode.objects.select_related("agent")
            .filter(consumer_user_id=consumer_user_id, agent__in=agents)
            .order_by("-created_at", "-id")
            .first()
        )
        last = None
        if binding is not None:
            last = (
                Message.objects.filter(conversation__conversation_id=binding.conversation_id)
                .order_by("-created_at", "-id")
                .first()
            )
        month_start = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        keys = list(agents.values_list("agent_key", flat=True))
        usage = JobUsage.objects.filter(
            consumer_user=consumer_user_id, agent_key__in=keys, created_at__gte=month_start
        ).aggregate(i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost_usd"))
        return Response(
            {
                "consumer_user_id": consumer_user_id,
                "active_binding": BindingSerializer(binding).data if binding else None,
                "pairing": PairingSerializer(pairing).data if pairing else None,
                "last_message": QueueItemSerializer(last).data if last else None,
                "usage_this_month": {
                    "input_tokens": usage["i"] or 0,
                    "output_tokens": usage["o"] or 0,
                    "cost_usd": f"{usage['c'] or 0:.6f}",
                },
            }
        )


class UserAgentStats(ConsumerView):
    serializer_class = UserAgentStatsSerializer

    @extend_schema(
        summary="Stats of a user's agent: push jobs and runs, history and queue (all time)"
    )
    def get(self, request, consumer_user_id, agent_key):
        agent = self.agent_or_404(agent_key)
        stats = user_agent_stats(consumer_user_id, agent)
        return Response(UserAgentStatsSerializer(stats).data)
