"""Pairings and bindings (SPEC §15 over §5.2's rules in ``telegram.pairing``)."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from agents.consumer_api.serializers import (
    BindingCreateSerializer,
    BindingSerializer,
    PairingCreatedSerializer,
    PairingCreateSerializer,
    PairingSerializer,
)
from agents.consumer_api.views_base import ConsumerView, row_id
from telegram.models import Bot, IdentityBinding, PairingCode
from telegram.pairing import (
    PairingError,
    bind_identity,
    create_pairing_code,
    deep_link,
    resolve_binding,
    revoke_binding,
)
from telegram.qr import qr_svg


def actor(api_key) -> str:
    return f"api_key:{api_key.prefix}"


class PairingCreate(ConsumerView):
    serializer_class = PairingCreateSerializer

    @extend_schema(responses={201: PairingCreatedSerializer}, summary="Create a pairing code")
    def post(self, request):
        return self.idempotent_write(request, self.create)

    def create(self, data):
        agent = self.agent_or_404(data["agent_key"])
        try:
            pairing = create_pairing_code(
                data["consumer_user_id"],
                agent.agent_key,
                actor=actor(self.api_key),
                ttl_minutes=data.get("ttl_minutes"),
            )
        except PairingError as exc:
            raise serializers.ValidationError({"agent_key": [str(exc)]})
        username = Bot.objects.filter(agent=agent).values_list("username", flat=True).first()
        link = deep_link(username or "", pairing.code)
        answer = {
            "code": pairing.code,
            "deep_link": link,
            "expires_at": pairing.expires_at,
            "qr_svg": qr_svg(link),
        }
        return 201, PairingCreatedSerializer(answer).data


class PairingDetail(ConsumerView):
    serializer_class = PairingSerializer

    @extend_schema(summary="Poll a pairing code's status")
    def get(self, request, code):
        pairing = (
            PairingCode.objects.select_related("agent")
            .filter(code=code.strip().upper(), agent__in=self.agents())
            .first()
        )
        if pairing is None:
            raise Http404("Pairing code not found.")
        return Response(PairingSerializer(pairing).data)


class BindingCreate(ConsumerView):
    serializer_class = BindingCreateSerializer

    @extend_schema(responses={201: BindingSerializer}, summary="Bind a user to an agent")
    def post(self, request):
        return self.idempotent_write(request, self.create)

    def create(self, data):
        agent = self.agent_or_404(data["agent_key"])
        bot = Bot.objects.filter(agent=agent).first()
        if bot is None:
            raise serializers.ValidationError(
                {"agent_key": [f"Agent '{agent.agent_key}' has no Telegram bot yet."]}
            )
        binding = bind_identity(
            data["consumer_user_id"],
            agent,
            bot_identity=bot.bot_identity,
            telegram_user_id=data["telegram_user_id"],
            # A private chat's id is the user's id.
            telegram_chat_id=data.get("telegram_chat_id") or data["telegram_user_id"],
            source="api",
            actor=actor(self.api_key),
        )
        return 201, BindingSerializer(binding).data


class BindingDetail(ConsumerView):
    serializer_class = BindingSerializer

    def scoped(self, pk):
        # Any path segment routes here (a typed converter would answer Django's HTML 404).
        binding = None
        if row_id(pk) is not None:
            binding = (
                IdentityBinding.objects.select_related("agent")
                .filter(pk=row_id(pk), agent__in=self.agents())
                .first()
            )
        if binding is None:
            raise Http404("Binding not found.")
        return binding

    @extend_schema(responses={200: BindingSerializer}, summary="Revoke a binding (answers with it)")
    def delete(self, request, pk):
        binding = self.scoped(pk)
        revoke_binding(binding, actor=actor(self.api_key))
        binding.refresh_from_db()
        return Response(BindingSerializer(binding).data)


class BindingResolve(ConsumerView):
    serializer_class = BindingSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("bot_identity", str, required=True),
            OpenApiParameter("telegram_user_id", str, required=True),
        ],
        summary="The active binding a Telegram user's messages route to",
    )
    def get(self, request):
        params = {
            k: request.query_params.get(k, "").strip() for k in ("bot_identity", "telegram_user_id")
        }
        missing = {k: ["This query parameter is required."] for k, v in params.items() if not v}
        if missing:
            raise serializers.ValidationError(missing)
        binding = resolve_binding(params["bot_identity"], params["telegram_user_id"])
        if binding is None or not self.agents().filter(pk=binding.agent_id).exists():
            raise Http404("No active binding for this Telegram user.")
        return Response(BindingSerializer(binding).data)
