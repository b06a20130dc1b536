"""Shapes of push templates, message templates and user-agent stats (SPEC §14, §15)."""

from __future__ import annotations

from rest_framework import serializers

from agents.consumer_api.serializers_push import SCHEDULE_HELP
from agents.pushing.models import PERIODICITIES, MessageTemplate, PushTemplate
from agents.pushing.template_services import template_variables

AGENT_KEY_HELP = (
    "The agent this template belongs to, or null for the whole tenant's. A key narrowed to "
    "some agents sees the tenant's templates and its agents' ones, and changes only the latter."
)


class PushTemplateSerializer(serializers.ModelSerializer):
    agent_key = serializers.CharField(
        source="agent.agent_key", read_only=True, allow_null=True, help_text=AGENT_KEY_HELP
    )
    suggested_times = serializers.ListField(
        child=serializers.DictField(), help_text="Suggested slots, each " + SCHEDULE_HELP
    )

    class Meta:
        model = PushTemplate
        fields = [
            "id",
            "key",
            "agent_key",
            "title",
            "text",
            "periodicity",
            "suggested_times",
            "enabled",
            "created_at",
            "updated_at",
        ]


class PushTemplateWriteSerializer(serializers.Serializer):
    """POST needs ``key``, ``text`` and ``periodicity``; PATCH any subset."""

    key = serializers.SlugField(max_length=100, help_text="Unique within the tenant.")
    agent_key = serializers.CharField(
        max_length=64, required=False, allow_null=True, help_text=AGENT_KEY_HELP
    )
    title = serializers.CharField(max_length=200, required=False, allow_blank=True)
    text = serializers.CharField(max_length=4000)
    periodicity = serializers.ChoiceField(choices=PERIODICITIES)
    suggested_times = serializers.ListField(
        child=serializers.DictField(),
        required=False,
        max_length=20,
        help_text="Slots matching the periodicity (none for manual): " + SCHEDULE_HELP,
    )
    enabled = serializers.BooleanField(default=True)


class MessageTemplateSerializer(serializers.ModelSerializer):
    agent_key = serializers.CharField(
        source="agent.agent_key", read_only=True, allow_null=True, help_text=AGENT_KEY_HELP
    )
    tags = serializers.ListField(child=serializers.CharField(), help_text="Lowercase, sorted.")
    variables = serializers.SerializerMethodField(
        help_text="The {{name}} variables the text uses; a send must give exactly these."
    )

    class Meta:
        model = MessageTemplate
        fields = [
            "slug",
            "agent_key",
            "title",
            "text",
            "tags",
            "variables",
            "usage_count",
            "enabled",
            "created_at",
            "updated_at",
        ]

    def get_variables(self, template) -> list[str]:
        return template_variables(template.text)


class MessageTemplateWriteSerializer(serializers.Serializer):
    """POST needs ``title`` and ``text`` (the slug comes from the title); PATCH any subset."""

    title = serializers.CharField(max_length=200, help_text="The slug is made from it.")
    text = serializers.CharField(
        max_length=4000, help_text="May use variables as {{name}} (letters, digits, _)."
    )
    tags = serializers.ListField(
        child=serializers.CharField(max_length=50), required=False, max_length=50
    )
    agent_key = serializers.CharField(
        max_length=64, required=False, allow_null=True, help_text=AGENT_KEY_HELP
    )
    enabled = serializers.BooleanField(default=True)


class UserAgentStatsSerializer(serializers.Serializer):
    consumer_user_id = serializers.CharField()
    agent_key = serializers.CharField()
    # A plain string: the same choices as Binding.status would be a second enum name.
    binding_status = serializers.CharField(
        allow_null=True,
        help_text="active or revoked: the user's latest binding to this agent, or null.",
    )
    conversation_id = serializers.CharField(allow_null=True)
    total_push_jobs = serializers.IntegerField(help_text="The user's push jobs (all states).")
    active_push_jobs = serializers.IntegerField(help_text="Those enabled.")
    total_dispatches = serializers.IntegerField(help_text="Push runs to this agent.")
    enqueued = serializers.IntegerField(help_text="Runs enqueued for the agent.")
    failed = serializers.IntegerField(help_text="Runs that failed (see the job's dispatches).")
    pending = serializers.IntegerField(help_text="Runs waiting for the next drain.")
    skipped = serializers.IntegerField(help_text="Runs not sent: the agent's budget was spent.")
    latest_dispatch_at = serializers.DateTimeField(allow_null=True)
    context_messages = serializers.IntegerField(help_text="History entries.")
    queued_messages = serializers.IntegerField(help_text="Queue items queued or processing.")
    failed_messages = serializers.IntegerField(help_text="Queue items failed or dead-lettered.")
    done_messages = serializers.IntegerField(help_text="Queue items done.")
