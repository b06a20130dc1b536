"""Shapes of push jobs and broadcasts in the consumer API (SPEC §14, §15)."""

from __future__ import annotations

from rest_framework import serializers

from agents.pushing.models import PERIODICITIES, PushBroadcast, PushJob

SCHEDULE_HELP = (
    'daily {"time": "HH:mm"}; weekly {"weekday": 1..7, "time"}; '
    'monthly {"day": 1..31 | "last", "time"}; manual {}'
)


class PushJobSerializer(serializers.ModelSerializer):
    agent_key = serializers.CharField(source="agent.agent_key", read_only=True, allow_null=True)
    schedule = serializers.JSONField(read_only=True, help_text=SCHEDULE_HELP)
    template_key = serializers.CharField(
        source="source_template.key",
        read_only=True,
        allow_null=True,
        help_text="The push template the job was made from (its text was copied), or null.",
    )

    class Meta:
        model = PushJob
        fields = [
            "id",
            "target",
            "consumer_user_id",
            "agent_key",
            "template_key",
            "title",
            "text",
            "periodicity",
            "timezone",
            "schedule",
            "enabled",
            "next_run_at",
            "last_run_at",
            "created_at",
            "updated_at",
        ]


class PushJobWriteSerializer(serializers.Serializer):
    """POST needs every field but ``title``/``enabled``/``target``; PATCH any subset."""

    target = serializers.ChoiceField(choices=[PushJob.USER, PushJob.AGENT_USERS], default="user")
    consumer_user_id = serializers.CharField(max_length=255, required=False, allow_blank=True)
    agent_key = serializers.CharField(max_length=64)
    title = serializers.CharField(max_length=200, required=False, allow_blank=True)
    text = serializers.CharField(
        max_length=4000, required=False, help_text="Required unless template_key is given."
    )
    template_key = serializers.SlugField(
        max_length=100,
        required=False,
        write_only=True,
        help_text="A push template of the tenant: its text (and title) when not given.",
    )
    periodicity = serializers.ChoiceField(choices=PERIODICITIES)
    timezone = serializers.CharField(max_length=64, default="UTC", help_text="IANA name.")
    schedule = serializers.DictField(required=False, help_text=SCHEDULE_HELP)
    enabled = serializers.BooleanField(default=True)


class PushDispatchSerializer(serializers.Serializer):
    run_key = serializers.CharField()
    status = serializers.CharField(help_text="pending, enqueued, failed or broadcast.")
    message_id = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(allow_blank=True)


class BroadcastCreateSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=4000)
    title = serializers.CharField(max_length=200, required=False, allow_blank=True)
    agent_keys = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        help_text="Default: every enabled agent in the key's scope.",
    )


class BroadcastCreatedSerializer(serializers.Serializer):
    broadcast_id = serializers.IntegerField()
    targets = serializers.IntegerField(help_text="Bound users reached (one job each).")


class BroadcastTargetSerializer(serializers.Serializer):
    consumer_user_id = serializers.CharField()
    status = serializers.CharField()
    message_id = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(allow_blank=True)


class BroadcastSerializer(serializers.ModelSerializer):
    broadcast_id = serializers.IntegerField(source="pk")
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="Per status.")
    targets = BroadcastTargetSerializer(many=True, help_text="Per-target status.")

    class Meta:
        model = PushBroadcast
        fields = [
            "broadcast_id",
            "title",
            "text",
            "agent_keys",
            "requested_at",
            "total_targets",
            "counts",
            "targets",
        ]
