"""Enqueue (SPEC §6.1): the one door; bad input is refused with a clear error, nothing written."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import pytest
from django.db import transaction
from django.utils import timezone

from agents.models import AgentProfile, Conversation
from workers.models import Message, MessageAttachment
from workers.queue import EnqueueError, enqueue_message

BASE = {"provider": "telegram", "provider_user_id": "u-1", "message_text": "hi"}


def enqueue(**kwargs):
    args = {"conversation_id": "conv-e", "agent_key": "alpha", "payload": BASE, **kwargs}
    return enqueue_message(**args)


def test_defaults(alpha_agent, runtime_config):
    before = timezone.now()
    result = enqueue()
    message = result.message
    assert result.conversation_created is True
    assert message.status == Message.QUEUED
    assert message.priority == 50
    assert message.max_attempts == runtime_config.max_attempts == 5
    assert message.attempts == 0
    assert before <= message.scheduled_for <= timezone.now()
    assert message.payload["metadata"]["provider_user_id"] == "u-1"
    assert enqueue().conversation_created is False
    assert Conversation.objects.get().agent == alpha_agent


@pytest.mark.parametrize("given, stored", [(-5, 0), (0, 0), (73, 73), (100, 100), (101, 100)])
def test_priority_is_clamped(alpha_agent, given, stored):
    assert enqueue(priority=given).message.priority == stored


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"agent_key": "ghost"}, "Agent profile 'ghost' not found or disabled"),
        ({"conversation_id": "  "}, "conversation_id is required"),
        ({"conversation_id": "x" * 256}, "longer than 255"),
        ({"priority": "high"}, "priority must be an integer"),
        ({"priority": True}, "priority must be an integer"),
        ({"max_attempts": 0}, "max_attempts must be an integer of at least 1"),
        ({"scheduled_for": dt.datetime(2030, 1, 1)}, "timezone-aware"),  # noqa: DTZ001
        ({"payload": []}, "payload must be a JSON object"),
        ({"payload": {**BASE, "surprise": 1}}, "unknown field"),
        ({"payload": {**BASE, "provider": ""}}, "payload.provider is required"),
        ({"payload": {**BASE, "provider_user_id": " "}}, "provider_user_id is required"),
        ({"payload": {**BASE, "message_text": 5}}, "message_text must be a string"),
        ({"payload": {**BASE, "metadata": [1]}}, "metadata must be an object"),
        ({"payload": {**BASE, "attachments": {}}}, "attachments must be a list"),
        ({"payload": {**BASE, "attachments": [{"kind": "gif"}]}}, r"attachments\[0\].kind"),
        (
            {"payload": {**BASE, "attachments": [{"kind": "photo", "file_name": 3}]}},
            "file_name must be a string",
        ),
        (
            {"payload": {**BASE, "attachments": [{"kind": "photo", "size_bytes": -1}]}},
            "size_bytes must be a non-negative integer",
        ),
        (
            {"payload": {**BASE, "attachments": [{"kind": "photo", "expires_at": "soon"}]}},
            "expires_at must be a timezone-aware",
        ),
        ({"payload": {**BASE, "external_message_id": 12}}, "external_message_id must be a string"),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(alpha_agent, kwargs, error):
    with pytest.raises(EnqueueError, match=error):
        enqueue(**kwargs)
    assert not Message.objects.exists()
    assert not Conversation.objects.exists()


def test_disabled_agent_is_refused(alpha_agent):
    AgentProfile.objects.filter(pk=alpha_agent.pk).update(enabled=False)
    with pytest.raises(EnqueueError, match="not found or disabled"):
        enqueue()
    assert not Message.objects.exists()


def test_a_conversation_keeps_its_agent(alpha_agent, beta_agent):
    enqueue()
    with pytest.raises(EnqueueError, match="already bound to agent 'alpha'"):
        enqueue(agent_key="beta")
    assert Message.objects.count() == 1


def test_attachments_become_rows(alpha_agent):
    expires = (timezone.now() + dt.timedelta(days=1)).isoformat()
    payload = {
        **BASE,
        "attachments": [
            {
                "kind": "photo",
                "status": "pending",
                "telegram_file_id": "F1",
                "size_bytes": 10,
                "expires_at": expires,
            },
            {"kind": "document", "file_name": "a.pdf", "mime_type": "application/pdf"},
        ],
    }
    message = enqueue(payload=payload).message
    rows = list(MessageAttachment.objects.filter(message=message).order_by("id"))
    assert [(r.kind, r.status) for r in rows] == [("photo", "pending"), ("document", "ready")]
    assert rows[0].telegram_file_id == "F1" and rows[0].expires_at is not None
    assert rows[1].file_name == "a.pdf"


def test_reconcile_is_requested_only_after_commit(alpha_agent, django_capture_on_commit_callbacks):
    with mock.patch("workers.triggers.request_reconcile") as trigger:
        with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
            enqueue()
            assert trigger.call_count == 0
        assert trigger.call_count == 1


def test_refusal_inside_a_callers_transaction_leaves_it_usable(alpha_agent, beta_agent):
    enqueue()
    with transaction.atomic():
        with pytest.raises(EnqueueError):
            enqueue(agent_key="beta")
        enqueue(conversation_id="conv-other")
    assert Message.objects.count() == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"agent_key": "ghost"}, "Agent profile 'ghost' not found or disabled"),
        (
            {"payload": {**BASE, "provider_user_id": "   "}},
            'provider_user_id is required but missing in payload.provider_user_id="   "',
        ),
        (
            {"payload": {k: v for k, v in BASE.items() if k != "provider_user_id"}},
            "provider_user_id is required but missing in payload.provider_user_id=null",
        ),
        (
            {"payload": {**BASE, "provider_user_id": 42}},
            "provider_user_id is required but missing in payload.provider_user_id=42",
        ),
    ],
)
def test_error_messages_are_the_specified_sentences(alpha_agent, kwargs, message):
    with pytest.raises(EnqueueError) as caught:
        enqueue(**kwargs)
    assert str(caught.value) == message
    assert not Message.objects.exists()


def test_conversation_agent_mismatch_sentence(alpha_agent, beta_agent):
    enqueue()
    with pytest.raises(EnqueueError) as caught:
        enqueue(agent_key="beta")
    assert str(caught.value) == (
        "Conversation 'conv-e' is already bound to agent 'alpha', cannot enqueue for 'beta'."
    )


def test_system_prompt_is_not_appended_to_the_text(alpha_agent, runtime_config):
    """SPEC §6.1 revision 2: the prompt travels in the hydration, the text stays the user's."""
    runtime_config.system_prompt = "Be brief."
    runtime_config.save()
    from agents.models import _RUNTIME_CONFIG_CACHE

    _RUNTIME_CONFIG_CACHE.clear()
    stored = enqueue(payload={**BASE, "message_text": "hello \n"}).message.payload
    assert stored["message_text"] == "hello \n"
    assert enqueue(payload={**BASE, "message_text": ""}).message.payload["message_text"] == ""


def test_scheduled_for_and_max_attempts_are_kept(alpha_agent):
    later = timezone.now() + dt.timedelta(hours=2)
    message = enqueue(scheduled_for=later, max_attempts=1).message
    message.refresh_from_db()
    assert message.scheduled_for == later and message.max_attempts == 1


def test_payload_is_stored_with_trimmed_user_id_in_metadata(alpha_agent):
    payload = {**BASE, "provider_user_id": "  u-9 ", "metadata": {"provider_user_id": "x", "k": 1}}
    stored = enqueue(payload=payload).message.payload
    assert stored["provider_user_id"] == "u-9"
    assert stored["metadata"] == {"provider_user_id": "u-9", "k": 1}
