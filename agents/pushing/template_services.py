"""Push templates and message templates (SPEC §14): validation, unique slugs per tenant,
``{{variable}}`` rendering, and sending a message template to a user's agent (counted in
``usage_count``). Templates belong to a tenant, and optionally to one of its agents."""

from __future__ import annotations

import re

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils.text import slugify

from agents.audit import record_audit
from agents.models import AgentProfile
from agents.pushing import targets
from agents.pushing.models import MessageTemplate, PushDispatch, PushTemplate
from agents.pushing.schedule import ScheduleError, parse_slot
from agents.pushing.services import (  # noqa: F401 (TemplateError: its callers' import)
    PushError,
    TemplateError,
    clean_text,
    resolve_tenant,
    tenant_for,
)
from telegram.models import IdentityBinding
from workers.queue import MAX_MESSAGE_TEXT, EnqueueError, enqueue_message

# ``{{ name }}``: letters, digits and underscores, not starting with a digit. Nothing else
# is interpreted (no filters, no attribute access): a template cannot reach any data.
VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}")
MAX_VARIABLE_LENGTH = 1000


def template_variables(text: str) -> list[str]:
    """The variable names a template text uses, in order of first use."""
    return list(dict.fromkeys(VARIABLE.findall(text)))


def render_template(text: str, variables: dict | None) -> str:
    """The text with every ``{{name}}`` replaced. Every used variable must be given and
    every given one used (a typo in a name must not send a half-filled message)."""
    variables = variables or {}
    if not isinstance(variables, dict):
        raise TemplateError("Variables must be an object of names to strings.", "variables")
    wanted = template_variables(text)
    missing = [name for name in wanted if name not in variables]
    unknown = sorted(set(variables) - set(wanted))
    problems = []
    if missing:
        problems.append("Missing variable(s): " + ", ".join(missing) + ".")
    if unknown:
        uses = ", ".join(wanted) if wanted else "none"
        problems.append(f"Unknown variable(s): {', '.join(unknown)} (the template uses: {uses}).")
    bad = sorted(
        name
        for name, value in variables.items()
        if not isinstance(value, str) or len(value) > MAX_VARIABLE_LENGTH
    )
    if bad:
        problems.append(
            f"Variable value(s) must be strings of at most {MAX_VARIABLE_LENGTH} "
            f"characters: {', '.join(bad)}."
        )
    if problems:
        raise TemplateError(" ".join(problems), "variables")
    rendered = VARIABLE.sub(lambda m: variables[m.group(1)], text)
    if len(rendered) > MAX_MESSAGE_TEXT:
        raise TemplateError(
            f"The rendered text is longer than {MAX_MESSAGE_TEXT} characters.", "variables"
        )
    return rendered


def _template_agent(agent_key: str | None, tenant):
    if not agent_key:
        return None
    agent = AgentProfile.objects.filter(agent_key=agent_key, tenant=tenant).first()
    if agent is None:
        raise TemplateError(
            f"Agent '{agent_key}' does not exist in tenant '{tenant.slug}'.", "agent_key"
        )
    return agent


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
    tenant=None,
    agent_key: str | None = None,
) -> PushTemplate:
    """Create or change a push template of ``tenant`` (the template's own when changing)."""
    tenant = tenant_for(template.tenant if template is not None else tenant, agent_key)
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
    agent = _template_agent(agent_key, tenant)
    template = template or PushTemplate(created_by=actor, tenant=tenant)
    created = template.pk is None
    template.agent = agent
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
        raise TemplateError(
            f"Push template key '{key}' already exists in tenant '{tenant.slug}'.", "key"
        )
    return template


def delete_template(template, *, actor: str) -> None:
    """Delete a push or message template (jobs made from a push template keep their copy)."""
    with transaction.atomic():
        record_audit(actor, f"{template._meta.model_name}.delete", template)
        template.delete()


def unique_slug(title: str, exclude_pk=None, tenant_id=None) -> str:
    """A slug from the title, free within the tenant (``-2``, ``-3``… on collisions)."""
    base = slugify(title)[:90] or "message-template"
    tenant_id = tenant_id or resolve_tenant(None).pk
    taken = set(
        MessageTemplate.objects.filter(tenant_id=tenant_id, slug__startswith=base)
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
    tenant=None,
    agent_key: str | None = None,
) -> MessageTemplate:
    """Create or change a message template of ``tenant`` (the template's own when changing)."""
    tenant = tenant_for(template.tenant if template is not None else tenant, agent_key)
    title, text = clean_text(title, "title"), clean_text(text)
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise PushError("Tags must be a list of strings.")
    agent = _template_agent(agent_key, tenant)
    template = template or MessageTemplate(created_by=actor, tenant=tenant)
    created = template.pk is None
    template.agent = agent
    if created or template.title != title:
        template.slug = unique_slug(title, template.pk, tenant.pk)
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


def send_message_template(
    slug: str,
    consumer_user_id: str,
    *,
    actor: str,
    tenant=None,
    agent_key: str | None = None,
    variables: dict | None = None,
    metadata: dict | None = None,
) -> dict:
    """Enqueue a template's text, its ``{{variables}}`` filled, for a tenant user's agent
    (``agent_key``: only if the user's active binding is to that agent); counts the use in
    the same transaction. Answers message id, conversation id and the new usage count."""
    tenant = tenant_for(tenant, agent_key)
    binding = (
        IdentityBinding.objects.select_related("agent")
        .filter(tenant=tenant, consumer_user_id=consumer_user_id, status=IdentityBinding.ACTIVE)
        .first()
    )
    if binding is None or (agent_key and binding.agent.agent_key != agent_key):
        to = f" to '{agent_key}'" if agent_key else ""
        raise PushError(f"No active agent binding{to} for consumer user '{consumer_user_id}'.")
    agent = binding.agent
    template = (
        MessageTemplate.objects.filter(tenant=tenant, slug=slug, enabled=True)
        .filter(Q(agent__isnull=True) | Q(agent=agent))
        .first()
    )
    if template is None:
        raise TemplateError(f"Message template '{slug}' not found or disabled.", "template")
    text = render_template(template.text, variables)
    target = PushDispatch(
        consumer_user_id=binding.consumer_user_id,
        conversation_id=binding.conversation_id,
        telegram_user_id=binding.telegram_user_id,
        telegram_chat_id=binding.telegram_chat_id,
        bot_identity=binding.bot_identity or "",
    )  # unsaved: only carries the target fields
    meta = {**(metadata or {}), "source": "message_template", "template": template.slug}
    try:
        with transaction.atomic():
            result = enqueue_message(
                conversation_id=binding.conversation_id,
                agent_key=agent.agent_key,
                payload=targets.payload_for(target, text, meta),
                agent=agent,
            )
            MessageTemplate.objects.filter(pk=template.pk).update(usage_count=F("usage_count") + 1)
            record_audit(actor, "message_template.send", template, consumer=consumer_user_id)
    except EnqueueError as exc:
        raise PushError(str(exc))
    template.refresh_from_db(fields=["usage_count"])
    return {
        "message_id": result.message.pk,
        "conversation_id": binding.conversation_id,
        "usage_count": template.usage_count,
    }
