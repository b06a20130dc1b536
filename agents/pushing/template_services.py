"""Push templates and message templates (SPEC §14): validation, unique slugs, and sending
a message template to a user's agent (counted in ``usage_count``)."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils.text import slugify

from agents.audit import record_audit
from agents.models import AgentProfile
from agents.pushing import targets
from agents.pushing.models import MessageTemplate, PushDispatch, PushTemplate
from agents.pushing.schedule import ScheduleError, parse_slot
from agents.pushing.services import PushError, clean_text
from workers.queue import EnqueueError, enqueue_message


def save_push_template(
    template: PushTemplate | None = None,
    *,
    actor: str,
    key: str,
    title: str,
    text: str,
    periodicity: str,
    suggested_times: list | None = None,
    enabled: bool = True,
) -> PushTemplate:
    text = clean_text(text)
    if not key or slugify(key) != key:
        raise PushError("The template key must be a slug (letters, digits, '-', '_').")
    suggested_times = suggested_times or []
    if not isinstance(suggested_times, list):
        raise PushError("Suggested times must be a list of schedules.")
    if periodicity == "manual" and suggested_times:
        raise PushError("A manual template takes no suggested times.")
    for index, item in enumerate(suggested_times):
        try:
            parse_slot(periodicity, "UTC", item)
        except ScheduleError as exc:
            raise PushError(f"Suggested time {index + 1}: {exc}")
    if periodicity not in ("manual", "daily", "weekly", "monthly"):
        raise PushError("Periodicity must be one of manual, daily, weekly, monthly.")
    template = template or PushTemplate(created_by=actor)
    created = template.pk is None
    template.key, template.title, template.text = key, title.strip()[:200], text
    template.periodicity, template.suggested_times = periodicity, suggested_times
    template.enabled, template.updated_by = enabled, actor
    try:
        with transaction.atomic():
            template.save()
            record_audit(
                actor, "push_template.add" if created else "push_template.change", template
            )
    except IntegrityError:
        raise PushError(f"Push template key '{key}' already exists.")
    return template


def unique_slug(title: str, exclude_pk=None) -> str:
    base = slugify(title)[:90] or "message-template"
    taken = set(
        MessageTemplate.objects.filter(slug__startswith=base)
        .exclude(pk=exclude_pk)
        .values_list("slug", flat=True)
    )
    slug, n = base, 1
    while slug in taken:
        n += 1
        slug = f"{base}-{n}"
    return slug


def save_message_template(
    template: MessageTemplate | None = None,
    *,
    actor: str,
    title: str,
    text: str,
    tags=None,
    enabled: bool = True,
) -> MessageTemplate:
    title, text = clean_text(title, "title"), clean_text(text)
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise PushError("Tags must be a list of strings.")
    template = template or MessageTemplate(created_by=actor)
    created = template.pk is None
    if created or template.title != title:
        template.slug = unique_slug(title, template.pk)
    template.title, template.text, template.enabled = title[:200], text, enabled
    if tags is not None:
        template.tags = sorted({t.strip().lower() for t in tags if t.strip()})
    template.updated_by = actor
    with transaction.atomic():
        template.save()
        record_audit(
            actor, "message_template.add" if created else "message_template.change", template
        )
    return template


def send_message_template(slug: str, consumer_user_id: str, *, actor: str) -> dict:
    """Enqueue a template's text for a user's agent; counts the use in the same transaction."""
    template = MessageTemplate.objects.filter(slug=slug, enabled=True).first()
    if template is None:
        raise PushError(f"Message template '{slug}' not found or disabled.")
    target = targets.bindings_of_users([consumer_user_id]).get(consumer_user_id)
    if target is None:
        raise PushError(f"No active agent binding for consumer user '{consumer_user_id}'.")
    row = PushDispatch(**target)  # unsaved: only carries the target fields
    agent = AgentProfile.objects.get(pk=target["agent_id"])
    payload = targets.payload_for(
        row, template.text, {"source": "message_template", "template": template.slug}
    )
    try:
        with transaction.atomic():
            result = enqueue_message(
                conversation_id=row.conversation_id,
                agent_key=agent.agent_key,
                payload=payload,
                agent=agent,
            )
            MessageTemplate.objects.filter(pk=template.pk).update(usage_count=F("usage_count") + 1)
            record_audit(actor, "message_template.send", template, consumer=consumer_user_id)
    except EnqueueError as exc:
        raise PushError(str(exc))
    template.refresh_from_db(fields=["usage_count"])
    return {"message_id": result.message.pk, "usage_count": template.usage_count}
