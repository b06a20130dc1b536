"""Request and response shapes of the consumer API (every field documented in the schema)."""

from __future__ import annotations

from rest_framework import serializers

from agents.models import AgentProfile, ConversationEntry
from telegram.models import IdentityBinding, PairingCode
from workers.models import DataSnapshot, Message

CONSUMER_USER_ID = {"max_length": 255, "help_text": "The host product's user id (per tenant)."}
TELEGRAM_ID = {"max_length": 32, "regex": r"^-?\d{1,20}$", "help_text": "A Telegram numeric id."}


class AgentSerializer(serializers.ModelSerializer):
    tenant = serializers.CharField(source="tenant.slug", read_only=True)
    bot_identity = serializers.SerializerMethodField(help_text="Numeric Telegram bot id or null.")
    bot_username = serializers.SerializerMethodField(help_text="Telegram bot username or null.")

    class Meta:
        model = AgentProfile
        fields = [
            "agent_key",
            "tenant",
            "enabled",
            "require_telegram_binding",
            "bot_identity",
            "bot_username",
            "created_at",
            "updated_at",
        ]

    def get_bot_identity(self, agent) -> str | None:
        bot = getattr(agent, "bot", None)
        return bot.bot_identity if bot else None

    def get_bot_username(self, agent) -> str | None:
        bot = getattr(agent, "bot", None)
        return bot.username if bot else None


class ReadinessItemSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    reason = serializers.CharField()


class ReadinessSerializer(serializers.Serializer):
    agent_key = serializers.CharField()
    items = serializers.DictField(child=ReadinessItemSerializer())
    next_action = serializers.CharField(help_text="The first failing step, or 'ready'.")
    ready = serializers.BooleanField()


class BindingSerializer(serializers.ModelSerializer):
    agent_key = serializers.CharField(source="agent.agent_key", read_only=True)

    class Meta:
        model = IdentityBinding
        fields = [
            "id",
            "consumer_user_id",
            "agent_key",
            "conversation_id",
            "bot_identity",
            "status",
            "source",
            "telegram_user_id",
            "telegram_chat_id",
            "bound_at",
            "revoked_at",
        ]


class BindingCreateSerializer(serializers.Serializer):
    consumer_user_id = serializers.CharField(**CONSUMER_USER_ID)
    agent_key = serializers.CharField(max_length=64)
    telegram_user_id = serializers.RegexField(**TELEGRAM_ID)
    telegram_chat_id = serializers.RegexField(required=False, **TELEGRAM_ID)


class PairingCreateSerializer(serializers.Serializer):
    consumer_user_id = serializers.CharField(**CONSUMER_USER_ID)
    agent_key = serializers.CharField(max_length=64)
    ttl_minutes = serializers.IntegerField(
        required=False, min_value=1, max_value=24 * 60, help_text="Default 15."
    )


class PairingCreatedSerializer(serializers.Serializer):
    code = serializers.CharField()
    deep_link = serializers.CharField(help_text="https://t.me/<bot>?start=<code>")
    expires_at = serializers.DateTimeField()
    qr_svg = serializers.CharField(help_text="The deep link as an SVG QR code.")


class PairingSerializer(serializers.ModelSerializer):
    agent_key = serializers.CharField(source="agent.agent_key", read_only=True)
    status = serializers.SerializerMethodField(help_text="pending, used or expired.")

    class Meta:
        model = PairingCode
        fields = ["code", "status", "consumer_user_id", "agent_key", "expires_at", "used_at"]

    def get_status(self, pairing) -> str:
        from django.utils import timezone

        if pairing.status == PairingCode.PENDING and pairing.expires_at <= timezone.now():
            return PairingCode.EXPIRED
        return pairing.status


class EntrySerializer(serializers.ModelSerializer):
    class Meta:
        model = ConversationEntry
        fields = ["id", "role", "content", "at"]


class QueueItemSerializer(serializers.ModelSerializer):
    message_id = serializers.IntegerField(source="pk", read_only=True)
    text = serializers.SerializerMethodField(help_text="The message text as enqueued.")

    class Meta:
        model = Message
        fields = [
            "message_id",
            "agent_key",
            "status",
            "priority",
            "attempts",
            "max_attempts",
            "last_error",
            "text",
            "created_at",
            "scheduled_for",
            "claimed_at",
            "completed_at",
            "delivered_at",
            "dead_lettered_at",
        ]

    def get_text(self, message) -> str:
        return (message.payload or {}).get("message_text", "")


class SendSerializer(serializers.Serializer):
    text = serializers.CharField(required=False, max_length=20000, help_text="Plain text.")
    template = serializers.SlugField(
        required=False, help_text="A message template's slug (the tenant's or this agent's)."
    )
    variables = serializers.DictField(
        child=serializers.CharField(max_length=1000, allow_blank=True),
        required=False,
        help_text="With 'template': a value for each {{name}} the template uses, no more.",
    )

    def validate(self, attrs):
        if bool(attrs.get("text")) == bool(attrs.get("template")):
            raise serializers.ValidationError(
                {"text": ["Give exactly one of 'text' or 'template'."]}
            )
        if attrs.get("variables") and not attrs.get("template"):
            raise serializers.ValidationError(
                {"variables": ["Variables go with a 'template', not with 'text'."]}
            )
        return attrs


class SentSerializer(serializers.Serializer):
    message_id = serializers.IntegerField()
    conversation_id = serializers.CharField()


class SnapshotSerializer(serializers.ModelSerializer):
    class Meta:
        model = DataSnapshot
        fields = [
            "id",
            "agent_key",
            "conversation_id",
            "worker_id",
            "reason",
            "format_version",
            "status",
            "sha256",
            "size_bytes",
            "error",
            "created_at",
            "completed_at",
            "expires_at",
        ]


class UsageRowSerializer(serializers.Serializer):
    period = serializers.CharField(help_text="YYYY-MM")
    agent_key = serializers.CharField()
    consumer_user = serializers.CharField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cost_usd = serializers.CharField(help_text="Estimated cost, a decimal string.")
    attempts = serializers.IntegerField()
    failed_attempts = serializers.IntegerField()


class MonthlyUsageSerializer(serializers.Serializer):
    month = serializers.CharField()
    results = UsageRowSerializer(many=True)


class ConversationHistorySerializer(serializers.Serializer):
    conversation_id = serializers.CharField()
    agent_key = serializers.CharField()
    results = EntrySerializer(many=True, help_text="History entries, newest first.")
    next = serializers.URLField(allow_null=True, help_text="The next page, or null.")


class UsageThisMonthSerializer(serializers.Serializer):
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cost_usd = serializers.CharField(help_text="Estimated cost, a decimal string.")


class UserOverviewSerializer(serializers.Serializer):
    consumer_user_id = serializers.CharField()
    active_binding = BindingSerializer(allow_null=True)
    pairing = PairingSerializer(allow_null=True, help_text="The user's latest pairing code.")
    last_message = QueueItemSerializer(allow_null=True)
    usage_this_month = UsageThisMonthSerializer()


class ErrorSerializer(serializers.Serializer):
    """Every error answer (SPEC §19)."""

    error = serializers.CharField(help_text="A stable code, e.g. not_found.")
    detail = serializers.CharField(help_text="A human sentence.")
    fields = serializers.DictField(
        required=False, help_text="Per-field messages of a validation error."
    )
    retry_after = serializers.IntegerField(required=False, help_text="Seconds, on 429.")
