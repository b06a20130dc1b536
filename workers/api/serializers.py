from __future__ import annotations

from rest_framework import serializers

from workers.models import DataSnapshot
from workers.reply_uploads import KINDS

_BOUND_FIELDS: dict[type, dict] = {}


class InputSerializer(serializers.Serializer):
    """A request-body serializer whose fields are built and bound once per class.

    DRF deep-copies a serializer's declared fields for every instance, and on the queue's
    hottest requests (claim, heartbeat, complete) that copy cost more than validating the
    body (bench/claim_throughput.py). These serializers only ever validate input (no
    instance, no context), and their fields keep no state while validating, so one bound
    set serves every instance, in every thread.
    """

    @property
    def fields(self):
        bound = _BOUND_FIELDS.get(type(self))
        if bound is None:
            bound = _BOUND_FIELDS[type(self)] = serializers.Serializer.fields.func(type(self)())
        return bound


class EmptySerializer(InputSerializer):
    pass


class ClaimSerializer(InputSerializer):
    conversation_id = serializers.CharField(required=False, max_length=255, allow_blank=False)
    wait_seconds = serializers.FloatField(
        required=False, min_value=0, max_value=25, help_text="Hold until a job is ready."
    )


class LeaseSerializer(InputSerializer):
    lease_id = serializers.CharField(max_length=64)


class UsageSerializer(InputSerializer):
    """One attempt's usage (SPEC §21); cost_usd only when the handler knows it."""

    input_tokens = serializers.IntegerField(min_value=0, max_value=10**12, default=0)
    output_tokens = serializers.IntegerField(min_value=0, max_value=10**12, default=0)
    cost_usd = serializers.FloatField(
        min_value=0, max_value=1_000_000, required=False, allow_null=True
    )
    model = serializers.CharField(max_length=200, allow_blank=True, required=False, default="")


class HistoryEntrySerializer(InputSerializer):
    role = serializers.ChoiceField(choices=["system", "user", "assistant", "tool"])
    content = serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=200_000)
    at = serializers.DateTimeField(required=False)


class ButtonSerializer(InputSerializer):
    """One inline-keyboard button: a link or a callback."""

    text = serializers.CharField(max_length=64)
    url = serializers.URLField(required=False, max_length=2000)
    callback_data = serializers.CharField(required=False, max_length=64)

    def validate(self, attrs):
        if ("url" in attrs) == ("callback_data" in attrs):
            raise serializers.ValidationError("A button needs exactly one of url, callback_data.")
        return attrs


class MediaItemSerializer(InputSerializer):
    """One reply file, uploaded first to jobs/<id>/uploads/ (SPEC §7, §22)."""

    kind = serializers.ChoiceField(choices=list(KINDS))
    upload_id = serializers.IntegerField(min_value=1)


class UploadQuerySerializer(LeaseSerializer):
    kind = serializers.ChoiceField(choices=list(KINDS))
    filename = serializers.CharField(max_length=255)


class ReplySerializer(InputSerializer):
    """The reply the server delivers (SPEC §22)."""

    text = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, max_length=100_000
    )
    format = serializers.ChoiceField(
        choices=["markdown", "html", "plain"], required=False, default="markdown"
    )
    media = MediaItemSerializer(many=True, required=False, max_length=10)
    buttons = serializers.ListField(
        child=ButtonSerializer(many=True, max_length=8), required=False, max_length=10
    )


class CompleteSerializer(LeaseSerializer):
    usage = UsageSerializer(required=False, allow_null=True)
    reply = ReplySerializer(required=False, allow_null=True)
    history = HistoryEntrySerializer(many=True, required=False, max_length=200)


class FailSerializer(LeaseSerializer):
    error = serializers.CharField(max_length=10_000, allow_blank=True, trim_whitespace=False)
    usage = UsageSerializer(required=False, allow_null=True)


class AppendMessagesSerializer(LeaseSerializer):
    message_id = serializers.IntegerField(min_value=1)
    messages = HistoryEntrySerializer(many=True, allow_empty=False, max_length=200)


class PrepareSnapshotSerializer(InputSerializer):
    workspace_id = serializers.CharField(max_length=100)
    agent_key = serializers.CharField(max_length=64)
    conversation_id = serializers.CharField(max_length=255)
    reason = serializers.ChoiceField(choices=[c for c, _ in DataSnapshot.REASON_CHOICES])


class FinalizeSnapshotSerializer(InputSerializer):
    sha256 = serializers.RegexField(r"^[0-9a-fA-F]{64}$")
    size_bytes = serializers.IntegerField(min_value=0)


class FailSnapshotSerializer(InputSerializer):
    error = serializers.CharField(max_length=5000, allow_blank=True)


class RejectSnapshotSerializer(InputSerializer):
    error = serializers.CharField(max_length=5000, help_text="Why the archive was refused.")


class LatestSnapshotQuerySerializer(InputSerializer):
    workspace_id = serializers.CharField(max_length=100)
    agent_key = serializers.CharField(max_length=64)
    conversation_id = serializers.CharField(max_length=255)
    before = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="A snapshot id: answer the newest ready snapshot older than that one.",
    )


class HydrationQuerySerializer(InputSerializer):
    lease_id = serializers.CharField(max_length=64)
