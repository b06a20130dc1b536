"""Push jobs, trigger-now, broadcasts, retries and stats: the rules that the admin, commands
and the schedule all call (SPEC §14). Each function validates everything before writing,
owns its transaction and writes the audit row."""

from __future__ import annotations

import datetime as dt

from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from agents.audit import record_audit
from agents.models import AgentProfile, Tenant
from agents.pushing import dispatch, targets
from agents.pushing.models import (
    PushBroadcast,
    PushDispatch,
    PushJob,
    PushTemplate,
)
from agents.pushing.schedule import ScheduleError, next_run_after, parse_slot, slot_of
from workers.queue import MAX_MESSAGE_TEXT


class PushError(ValueError):
    """Refused input or state; nothing was written. The text is safe to show."""


class TemplateError(PushError):
    """A refused template or send, naming the request field at fault (``field``)."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def clean_text(value, field: str = "text") -> str:
    if not isinstance(value, str) or not value.strip():
        raise PushError(f"The {field} is required.")
    if len(value) > MAX_MESSAGE_TEXT:
        raise PushError(f"The {field} is longer than {MAX_MESSAGE_TEXT} characters.")
    return value.strip()


def resolve_tenant(tenant) -> Tenant:
    """A Tenant row from a row, an id, a slug or None (``default``, made on first use)."""
    if isinstance(tenant, Tenant):
        return tenant
    if isinstance(tenant, int):
        return Tenant.objects.get(pk=tenant)
    slug = tenant or Tenant.DEFAULT_SLUG
    row = Tenant.objects.filter(slug=slug).first()
    if row is None:
        if slug != Tenant.DEFAULT_SLUG:
            raise PushError(f"Tenant '{slug}' does not exist.")
        row, _ = Tenant.objects.get_or_create(slug=slug, defaults={"name": "Default"})
    return row


def tenant_for(tenant, agent_key: str | None = None) -> Tenant:
    """The tenant given, else the named agent's, else ``default``: a caller that names only
    an agent (the admin, a command) means that agent's tenant."""
    if tenant is None and agent_key:
        agent = AgentProfile.objects.select_related("tenant").filter(agent_key=agent_key).first()
        if agent is not None:
            return agent.tenant
    return resolve_tenant(tenant)


def _agent(agent_key: str, *, enabled: bool = True, tenant: Tenant | None = None) -> AgentProfile:
    agent = AgentProfile.objects.filter(agent_key=agent_key).first()
    if agent is None or (tenant is not None and agent.tenant_id != tenant.pk):
        where = f" in tenant '{tenant.slug}'" if tenant is not None else ""
        raise PushError(f"Agent '{agent_key}' does not exist{where}.")
    if enabled and not agent.enabled:
        raise PushError(f"Agent '{agent_key}' is disabled.")
    return agent


def drain_after_commit() -> None:
    """Enqueue the new pending rows soon (a django-q2 task); the every-minute dispatcher
    drains them anyway if the broker is down."""
    from django_q.tasks import async_task

    transaction.on_commit(
        lambda: async_task("agents.pushing.dispatch.drain_pending", task_name="push-drain"),
        robust=True,
    )


# Push jobs ------------------------------------------------------------------------------


def save_push_job(
    job: PushJob | None = None,
    *,
    actor: str,
    text: str,
    periodicity: str,
    timezone_name: str = "UTC",
    schedule: dict | None = None,
    consumer_user_id: str = "",
    agent_key: str | None = None,
    target: str = PushJob.USER,
    title: str = "",
    enabled: bool = True,
    template_key: str | None = None,
    tenant=None,
    now: dt.datetime | None = None,
) -> PushJob:
    """Create (``job`` None) or replace a job's settings; the next run is recomputed.

    The job belongs to its agent's tenant (or ``tenant``, default ``default``, when no agent
    is named): its consumer user id, and the template key, are that tenant's."""
    now = now or timezone.now()
    if job is not None and tenant is None:
        tenant = job.tenant
    tenant = tenant_for(tenant, agent_key)
    template = None
    if template_key:
        template = PushTemplate.objects.filter(tenant=tenant, key=template_key).first()
        if template is None:
            raise TemplateError(
                f"Push template '{template_key}' does not exist in tenant '{tenant.slug}'.",
                "template_key",
            )
        text, title = text or template.text, title or template.title
    text = clean_text(text)
    if len(title) > 200:
        raise PushError("The title is longer than 200 characters.")
    if target not in (PushJob.USER, PushJob.AGENT_USERS):
        raise PushError("Target must be 'user' or 'agent_users'.")
    consumer_user_id = (consumer_user_id or "").strip()
    agent = None
    if target == PushJob.USER:
        if not consumer_user_id or len(consumer_user_id) > 255:
            raise PushError("A push to one user needs its consumer user id (1-255 characters).")
        if agent_key:
            agent = _agent(agent_key, enabled=False, tenant=tenant)
    else:
        if not agent_key:
            raise PushError("A push to all bound users of an agent needs the agent key.")
        agent, consumer_user_id = _agent(agent_key, enabled=False, tenant=tenant), ""
    try:
        slot = parse_slot(periodicity, timezone_name, schedule)
    except ScheduleError as exc:
        raise PushError(str(exc))
    job = job or PushJob(created_at=now)
    created = job.pk is None
    if created:
        job.created_by = actor
    job.tenant = tenant
    job.target, job.consumer_user_id, job.agent = target, consumer_user_id, agent
    job.title, job.text, job.periodicity, job.timezone = title, text, periodicity, slot.timezone
    job.time = f"{slot.hour:02d}:{slot.minute:02d}" if periodicity != "manual" else ""
    job.weekday = slot.weekday
    job.day_of_month = "" if slot.day is None else str(slot.day)
    job.enabled = enabled
    if template is not None:
        job.source_template = template
    job.next_run_at = _next_run_keeping_a_due_slot(job, slot, now) if enabled else None
    with transaction.atomic():
        job.save()
        record_audit(
            actor,
            "push_job.add" if created else "push_job.change",
            job,
            next_run_at=str(job.next_run_at),
        )
    return job


def _next_run_keeping_a_due_slot(job: PushJob, slot, now: dt.datetime):
    """The next run after an edit. A slot that is due but not dispatched yet (edited at
    08:00:10, before the 08:00 tick) is kept when the schedule did not change — editing a
    typo in the text must not silently drop today's push (the original dropped it)."""
    if job.pk is not None:
        stored = PushJob.objects.filter(pk=job.pk).first()
        if (
            stored is not None
            and stored.enabled
            and stored.next_run_at is not None
            and stored.next_run_at <= now
            and slot_of(stored) == slot
        ):
            return stored.next_run_at
    return next_run_after(slot, now)


def set_job_enabled(job: PushJob, enabled: bool, *, actor: str, now=None) -> PushJob:
    """Enable (from the next slot after now: missed slots are not replayed) or disable."""
    now = now or timezone.now()
    job.enabled = enabled
    job.next_run_at = next_run_after(slot_of(job), now) if enabled else None
    with transaction.atomic():
        job.save(update_fields=["enabled", "next_run_at", "updated_at"])
        record_audit(actor, "push_job.enable" if enabled else "push_job.disable", job)
    return job


def trigger_push_job(job: PushJob, *, actor: str, now=None) -> PushDispatch:
    """Send a job now, whatever its schedule or state (the schedule is left as it is).

    The run key is the minute (``manual:2026-01-05T08:10Z``): a double click sends once.
    """
    now = (now or timezone.now()).replace(second=0, microsecond=0)
    run_key = f"manual:{now.astimezone(dt.UTC):%Y-%m-%dT%H:%MZ}"
    row = PushDispatch(
        job=job,
        tenant_id=job.tenant_id,
        run_key=run_key,
        mode="manual",
        scheduled_for=now,
        created_at=now,
    )
    if job.target == PushJob.AGENT_USERS:
        agent = job.agent
        if agent is None or not agent.enabled:
            raise PushError(f"Agent '{agent}' is disabled; nothing was sent.")
    else:
        users = targets.bindings_of_users([(job.tenant_id, job.consumer_user_id)])
        dispatch.fill_user_target(row, job, users)
        if row.status == PushDispatch.FAILED:
            raise PushError(row.error + " Nothing was sent.")
    try:
        with transaction.atomic():
            if job.target == PushJob.AGENT_USERS:
                broadcast = PushBroadcast(
                    tenant_id=job.tenant_id,
                    title=job.title,
                    text=job.text,
                    agent_keys=[job.agent.agent_key],
                    requested_by=actor,
                    requested_at=now,
                )
                dispatch.create_broadcasts([broadcast], [[job.agent_id]])
                row.status, row.broadcast, row.agent = PushDispatch.BROADCAST, broadcast, job.agent
            row.save()
            PushJob.objects.filter(pk=job.pk).update(last_run_at=now, last_run_key=run_key)
            record_audit(actor, "push_job.trigger", job, run_key=run_key)
            drain_after_commit()
    except IntegrityError:
        raise PushError(
            f"Push job #{job.pk} was already triggered at {now:%H:%M} UTC; "
            "it is sent once per minute at most."
        )
    return row


# Broadcasts -----------------------------------------------------------------------------


def broadcast_agents(agent_keys: list[str] | None, tenant=None) -> list[AgentProfile]:
    """The named agents (each must exist and be enabled), or every enabled agent — of
    ``tenant`` when one is given (an operator's broadcast may span tenants)."""
    tenant = resolve_tenant(tenant) if tenant is not None else None
    if not agent_keys:
        agents = AgentProfile.objects.filter(enabled=True).order_by("agent_key")
        return list(agents.filter(tenant=tenant) if tenant is not None else agents)
    return [_agent(key, tenant=tenant) for key in dict.fromkeys(agent_keys)]


def preview_broadcast(agent_keys: list[str] | None, tenant=None) -> dict:
    agents = broadcast_agents(agent_keys, tenant)
    counts = dict(
        AgentProfile.objects.filter(pk__in=[a.pk for a in agents])
        .annotate(n=Count("bindings", filter=Q(bindings__status="active")))
        .values_list("agent_key", "n")
    )
    return {"targets": sum(counts.values()), "by_agent": counts}


def send_broadcast(
    text: str, *, actor: str, agent_keys=None, title: str = "", tenant=None
) -> PushBroadcast:
    """One queue job per active binding of the agents; enqueued after commit (drain).

    Each target row carries its binding's tenant; the broadcast carries its agents' tenant
    (none when an operator's broadcast spans several)."""
    text = clean_text(text)
    agents = broadcast_agents(agent_keys, tenant)
    tenants = {a.tenant_id for a in agents}
    broadcast = PushBroadcast(
        tenant_id=tenants.pop() if len(tenants) == 1 else None,
        title=title[:200],
        text=text,
        agent_keys=[a.agent_key for a in agents],
        requested_by=actor,
    )
    with transaction.atomic():
        dispatch.create_broadcasts([broadcast], [[a.pk for a in agents]])
        record_audit(actor, "push_broadcast.send", broadcast, targets=broadcast.total_targets)
        drain_after_commit()
    return broadcast


def broadcast_counts(broadcast: PushBroadcast) -> dict:
    counts = dict(broadcast.targets.values_list("status").annotate(n=Count("id")))
    return {s: counts.get(s, 0) for s in ("pending", "enqueued", "failed")}


# Stats ----------------------------------------------------------------------------------


def push_stats(consumer_user_id: str, agent_key: str | None = None, tenant=None) -> dict:
    """Per user of a tenant (and agent): jobs, active jobs, dispatches by status, the latest."""
    tenant = resolve_tenant(tenant)
    jobs = PushJob.objects.filter(tenant=tenant, consumer_user_id=consumer_user_id)
    sent = PushDispatch.objects.filter(tenant=tenant, consumer_user_id=consumer_user_id)
    if agent_key:
        sent = sent.filter(agent__agent_key=agent_key)
    by_status = dict(sent.values_list("status").annotate(n=Count("id")))
    return {
        "total_push_jobs": jobs.count(),
        "active_push_jobs": jobs.filter(enabled=True).count(),
        "total_dispatches": sum(by_status.values()),
        "enqueued": by_status.get("enqueued", 0),
        "failed": by_status.get("failed", 0),
        "pending": by_status.get("pending", 0),
        "skipped": by_status.get("skipped", 0),
        "latest_dispatch_at": sent.aggregate(m=Max("created_at"))["m"],
    }


# Retrying ------------------------------------------------------------------------------


def retry_failed(rows, *, actor: str) -> dict:
    """Put failed dispatch or broadcast-target rows back to pending (the drain enqueues
    them again). A user push looks up the user's binding again; broadcast targets keep
    theirs. Rows enqueued or pending, and failed runs of agent-wide jobs (they never made
    their targets: trigger the job instead), are left alone."""
    model = rows.model
    failed = list(rows.filter(status=model.FAILED, message_id__isnull=True))
    if model is PushDispatch:
        failed = [row for row in failed if row.broadcast_id is None]
        users = targets.bindings_of_users(
            (row.job.tenant_id, row.job.consumer_user_id)
            for row in failed
            if row.job.target == PushJob.USER
        )
        for row in failed:
            # A failed run of an agent-wide job never made its targets: "trigger now" does.
            if row.job.target == PushJob.USER:
                dispatch.fill_user_target(row, row.job, users)
    else:
        for row in failed:
            row.status = model.PENDING
    for row in failed:
        if row.status == model.PENDING:
            row.error = ""
    fields = ["status", "error", *targets.TARGET_FIELDS]
    with transaction.atomic():
        model.objects.bulk_update(failed, fields)
        retried = sum(row.status == model.PENDING for row in failed)
        record_audit(actor, f"{model._meta.model_name}.retry", None, retried=retried)
        drain_after_commit()
    return {"retried": retried, "still_failed": len(failed) - retried}
