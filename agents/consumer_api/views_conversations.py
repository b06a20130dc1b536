"""Conversations, queue items, sending to a user's agent, usage and snapshots (SPEC §15)."""

from __future__ import annotations

import datetime as dt
import re

from django.db import transaction
from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from agents.api_errors import Conflict
from agents.consumer_api.idempotency import idempotent
from agents.consumer_api.serializers import (
    ConversationHistorySerializer,
    EntrySerializer,
    MonthlyUsageSerializer,
    QueueItemSerializer,
    SendSerializer,
    SentSerializer,
    SnapshotSerializer,
)
from agents.consumer_api.views_base import ConsumerView
from agents.consumer_api.views_identity import actor
from agents.models import Conversation, ConversationEntry
from agents.pushing.services import PushError
from agents.pushing.targets import payload_for
from agents.pushing.template_services import TemplateError, send_message_template
from telegram.models import IdentityBinding
from workers.models import DataSnapshot, Message
from workers.queue import EnqueueError, enqueue_message
from workers.usage import usage_summary

MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class ConversationView(ConsumerView):
    def conversation_or_404(self, conversation_id):
        conversation = (
            Conversation.objects.select_related("agent")
            .filter(conversation_id=conversation_id, agent__in=self.agents())
            .first()
        )
        if conversation is None:
            raise Http404("Conversation not found.")
        return conversation


class ConversationDetail(ConversationView):
    serializer_class = EntrySerializer

    @extend_schema(
        responses=ConversationHistorySerializer,
        parameters=[OpenApiParameter("cursor", str), OpenApiParameter("page_size", int)],
        summary="A conversation's history, newest entry first",
    )
    def get(self, request, conversation_id):
        conversation = self.conversation_or_404(conversation_id)
        entries = ConversationEntry.objects.filter(conversation=conversation)
        response = self.paginated(entries, EntrySerializer)
        response.data = {
            "conversation_id": conversation.conversation_id,
            "agent_key": conversation.agent.agent_key,
            **response.data,
        }
        return response


class ConversationMessages(ConversationView):
    serializer_class = QueueItemSerializer
    ordering_fields = ["id", "created_at", "priority"]

    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=[s for s, _ in Message.STATUS_CHOICES])],
        responses=QueueItemSerializer(many=True),
        summary="The conversation's queue items (status, attempts, timestamps)",
    )
    def get(self, request, conversation_id):
        conversation = self.conversation_or_404(conversation_id)
        messages = Message.objects.filter(conversation=conversation)
        status = request.query_params.get("status")
        if status:
            if status not in dict(Message.STATUS_CHOICES):
                raise serializers.ValidationError({"status": [f"Unknown status '{status}'."]})
            messages = messages.filter(status=status)
        return self.paginated(messages, QueueItemSerializer)

    def get_queryset(self):
        return Message.objects.none()


class SendToUserAgent(ConsumerView):
    serializer_class = SendSerializer

    @extend_schema(
        responses={202: SentSerializer},
        summary="Send a text or a message template to a user's agent",
    )
    def post(self, request, consumer_user_id, agent_key):
        body = SendSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        agent = self.agent_or_404(agent_key)
        binding = IdentityBinding.objects.filter(
            consumer_user_id=consumer_user_id, agent=agent, status=IdentityBinding.ACTIVE
        ).first()
        if binding is None:
            raise Http404(f"User '{consumer_user_id}' has no active binding to '{agent_key}'.")
        return idempotent(request, self.api_key, lambda: self.send(agent, binding, body.data))

    def send(self, agent, binding, data):
        meta = {"source": "api", "api_key": self.api_key.prefix}
        if data.get("template"):
            return 202, self.send_template(agent, binding, data, meta)
        try:
            with transaction.atomic():
                result = enqueue_message(
                    conversation_id=binding.conversation_id,
                    agent_key=agent.agent_key,
                    payload=payload_for(binding, data["text"], meta),
                    agent=agent,
                )
        except EnqueueError as exc:
            raise Conflict(str(exc), code="enqueue_refused")
        return 202, {"message_id": result.message.pk, "conversation_id": binding.conversation_id}

    def send_template(self, agent, binding, data, meta) -> dict:
        """The same service as the admin and ``message_templates send`` (SPEC §14)."""
        try:
            sent = send_message_template(
                data["template"],
                binding.consumer_user_id,
                actor=actor(self.api_key),
                tenant=agent.tenant,
                agent_key=agent.agent_key,
                variables=data.get("variables") or {},
                metadata={"api_key": meta["api_key"]},
            )
        except TemplateError as exc:
            raise serializers.ValidationError({exc.field: [str(exc)]})
        except PushError as exc:
            raise Conflict(str(exc), code="enqueue_refused")
        return {"message_id": sent["message_id"], "conversation_id": sent["conversation_id"]}


class UsageView(ConsumerView):
    serializer_class = MonthlyUsageSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("agent_key", str),
            OpenApiParameter("consumer_user_id", str),
            OpenApiParameter("month", str, description="YYYY-MM (UTC); default this month."),
        ],
        summary="Tokens, estimated cost and attempts per agent and user for a month",
    )
    def get(self, request):
        params = request.query_params
        month = params.get("month") or timezone.now().strftime("%Y-%m")
        if not MONTH.match(month):
            raise serializers.ValidationError({"month": ["Use YYYY-MM, e.g. 2026-01."]})
        start = dt.datetime.strptime(month + "-01", "%Y-%m-%d").replace(tzinfo=dt.UTC)
        keys = set(self.agents().values_list("agent_key", flat=True))
        agent_key = params.get("agent_key") or None
        if agent_key and agent_key not in keys:
            raise Http404(f"Agent '{agent_key}' not found.")
        rows = usage_summary(
            period="month",
            agent_key=agent_key,
            consumer_user=params.get("consumer_user_id") or None,
            since=start,
        )
        rows = [row for row in rows if row["period"] == month and row["agent_key"] in keys]
        return Response(MonthlyUsageSerializer({"month": month, "results": rows}).data)


class SnapshotList(ConsumerView):
    serializer_class = SnapshotSerializer
    ordering_fields = ["id", "created_at"]

    @extend_schema(
        parameters=[OpenApiParameter("agent_key", str), OpenApiParameter("conversation_id", str)],
        responses=SnapshotSerializer(many=True),
        summary="Snapshot metadata (archives are for workers only)",
    )
    def get(self, request):
        keys = self.agents().values_list("agent_key", flat=True)
        snapshots = DataSnapshot.objects.filter(agent_key__in=keys)
        for name in ("agent_key", "conversation_id"):
            if request.query_params.get(name):
                snapshots = snapshots.filter(**{name: request.query_params[name]})
        return self.paginated(snapshots, SnapshotSerializer)

    def get_queryset(self):
        return DataSnapshot.objects.none()
