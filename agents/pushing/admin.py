"""Admin for pushing: jobs (trigger now, enable, disable), their dispatches, broadcasts with
a preview-then-confirm send page, per-target rows, push and message templates (SPEC §16)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from agents.admin_access import ReadOnlyAdminMixin, require
from agents.admin_audited import AuditedModelAdmin
from agents.audit import actor_name
from agents.models import AgentProfile
from agents.pushing import services, template_services
from agents.pushing.models import (
    MessageTemplate,
    PushBroadcast,
    PushBroadcastDispatch,
    PushDispatch,
    PushJob,
    PushTemplate,
)
from agents.pushing.schedule import ScheduleError, parse_slot


class TenantFormMixin:
    """Tenant optional in the form: empty means the agent's tenant, else ``default``; an
    agent of another tenant is a form error (consumer ids and keys are per tenant)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tenant"].required = False
        self.fields["tenant"].help_text = "Empty: the agent's tenant, or 'default'."

    def check_tenant(self, cleaned) -> None:
        agent, tenant = cleaned.get("agent"), cleaned.get("tenant")
        if tenant is None:
            tenant = agent.tenant if agent is not None else services.resolve_tenant(None)
            cleaned["tenant"] = self.instance.tenant = tenant
        if agent is not None and agent.tenant_id != tenant.pk:
            self.add_error("agent", f"Agent '{agent}' belongs to tenant '{agent.tenant}'.")


class PushJobForm(TenantFormMixin, forms.ModelForm):
    class Meta:
        model = PushJob
        fields = [
            "tenant",
            "target",
            "consumer_user_id",
            "agent",
            "title",
            "text",
            "periodicity",
            "timezone",
            "time",
            "weekday",
            "day_of_month",
            "enabled",
        ]

    def clean(self):
        cleaned = super().clean()
        periodicity = cleaned.get("periodicity")
        schedule = {}
        if periodicity and periodicity != "manual":
            schedule["time"] = cleaned.get("time") or ""
        if periodicity == "weekly":
            schedule["weekday"] = cleaned.get("weekday")
        if periodicity == "monthly":
            day = (cleaned.get("day_of_month") or "").strip()
            schedule["day"] = day if day == "last" or not day.isdigit() else int(day)
        try:
            slot = parse_slot(periodicity or "", cleaned.get("timezone") or "", schedule)
        except ScheduleError as exc:
            raise forms.ValidationError(str(exc))
        cleaned["timezone"] = slot.timezone
        target = cleaned.get("target")
        if target == PushJob.USER and not (cleaned.get("consumer_user_id") or "").strip():
            self.add_error("consumer_user_id", "A push to one user needs its consumer user id.")
        if target == PushJob.AGENT_USERS and not cleaned.get("agent"):
            self.add_error("agent", "A push to all bound users of an agent needs the agent.")
        self.check_tenant(cleaned)
        cleaned["schedule"] = schedule
        return cleaned


@admin.register(PushJob)
class PushJobAdmin(AuditedModelAdmin):
    form = PushJobForm
    list_display = [
        "id",
        "title",
        "tenant",
        "target",
        "consumer_user_id",
        "agent",
        "periodicity",
        "slot",
        "timezone",
        "enabled",
        "next_run_at",
        "last_run_at",
    ]
    list_filter = ["enabled", "periodicity", "target", "tenant", "agent"]
    search_fields = ["consumer_user_id", "title", "text"]
    list_select_related = ["agent", "tenant"]
    readonly_fields = ["next_run_at", "last_run_at", "last_run_key", "created_at", "updated_at"]
    actions = ["trigger_now", "enable", "disable"]
    audit_prefix = "push_job"

    @admin.display(description="slot")
    def slot(self, obj):
        return ", ".join(f"{k} {v}" for k, v in obj.schedule.items()) or "manual"

    def save_model(self, request, obj, form, change):
        # The service validates again, recomputes the next run and writes the audit row.
        cleaned = form.cleaned_data
        services.save_push_job(
            obj,
            actor=actor_name(request.user),
            text=cleaned["text"],
            title=cleaned.get("title") or "",
            periodicity=cleaned["periodicity"],
            timezone_name=cleaned["timezone"],
            schedule=cleaned["schedule"],
            consumer_user_id=cleaned.get("consumer_user_id") or "",
            agent_key=cleaned["agent"].agent_key if cleaned.get("agent") else None,
            target=cleaned["target"],
            enabled=cleaned["enabled"],
            tenant=cleaned["tenant"],
        )

    @admin.action(description="Send the selected jobs now (confirm first)", permissions=["change"])
    def trigger_now(self, request, queryset):
        jobs = list(queryset.select_related("agent"))
        if request.POST.get("confirm") != "yes":
            reach = dict(
                AgentProfile.objects.filter(pk__in=[j.agent_id for j in jobs if j.agent_id])
                .annotate(n=Count("bindings", filter=Q(bindings__status="active")))
                .values_list("pk", "n")
            )
            rows = [
                (job, reach.get(job.agent_id, 0) if job.target == PushJob.AGENT_USERS else 1)
                for job in jobs
            ]
            return TemplateResponse(
                request,
                "admin/pushing/confirm_trigger.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Send these push jobs now?",
                    "rows": rows,
                    "total": sum(n for _, n in rows),
                    "objects": jobs,
                    "opts": self.model._meta,
                },
            )
        sent = 0
        for job in jobs:
            try:
                services.trigger_push_job(job, actor=actor_name(request.user))
                sent += 1
            except services.PushError as exc:
                self.message_user(request, f"Job #{job.pk}: {exc}", messages.ERROR)
        if sent:
            self.message_user(request, f"{sent} job(s) triggered; the agents write the replies.")
        return None

    @admin.action(
        description="Enable the selected jobs (from their next slot)", permissions=["change"]
    )
    def enable(self, request, queryset):
        for job in queryset:
            services.set_job_enabled(job, True, actor=actor_name(request.user))
        self.message_user(request, "Enabled; missed slots are not replayed.")

    @admin.action(description="Disable the selected jobs", permissions=["change"])
    def disable(self, request, queryset):
        for job in queryset:
            services.set_job_enabled(job, False, actor=actor_name(request.user))
        self.message_user(request, "Disabled.")


class RetryableAdmin(admin.ModelAdmin):
    """Dispatch rows: every field read-only; the change permission only opens the retry."""

    actions = ["retry"]

    def has_add_permission(self, request):
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    @admin.action(description="Retry the selected failed rows", permissions=["change"])
    def retry(self, request, queryset):
        report = services.retry_failed(queryset, actor=actor_name(request.user))
        self.message_user(
            request,
            f"{report['retried']} row(s) queued again; {report['still_failed']} still failed "
            "(see their reason).",
        )


@admin.register(PushDispatch)
class PushDispatchAdmin(RetryableAdmin):
    list_display = [
        "created_at",
        "job",
        "run_key",
        "mode",
        "status",
        "scheduled_for",
        "missed_slots",
        "consumer_user_id",
        "agent",
        "message_id",
        "error",
    ]
    list_filter = ["status", "mode", "agent"]
    search_fields = ["consumer_user_id", "run_key", "error"]
    list_select_related = ["job", "agent"]


@admin.register(PushBroadcastDispatch)
class PushBroadcastDispatchAdmin(RetryableAdmin):
    list_display = ["broadcast", "consumer_user_id", "agent", "status", "message_id", "error"]
    list_filter = ["status", "agent"]
    search_fields = ["consumer_user_id", "error"]
    list_select_related = ["broadcast", "agent"]


@admin.register(PushBroadcast)
class PushBroadcastAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "title",
        "requested_by",
        "requested_at",
        "total_targets",
        "enqueued",
        "failed",
        "pending",
    ]
    search_fields = ["title", "text", "requested_by"]
    date_hierarchy = "requested_at"

    def get_queryset(self, request):
        counts = {
            status: Count("targets", filter=Q(targets__status=status))
            for status in ("enqueued", "failed", "pending")
        }
        return super().get_queryset(request).annotate(**counts)

    @admin.display(ordering="enqueued")
    def enqueued(self, obj):
        return obj.enqueued

    @admin.display(ordering="failed")
    def failed(self, obj):
        return obj.failed

    @admin.display(ordering="pending")
    def pending(self, obj):
        return obj.pending

    def get_urls(self):
        send = self.admin_site.admin_view(self.send_view)
        return [path("send/", send, name="pushing_broadcast_send")] + super().get_urls()

    def send_view(self, request):
        """Write the text, see how many users it reaches, then confirm (SPEC §16)."""
        require(
            request,
            request.user.has_perm("pushing.add_pushbroadcast"),
            door="push_broadcast.send",
            permission="pushing.add_pushbroadcast",
        )
        context = {
            **self.admin_site.each_context(request),
            "title": "Send a broadcast",
            "opts": self.model._meta,
            "agents": AgentProfile.objects.filter(enabled=True).order_by("agent_key"),
        }
        if request.method != "POST":
            return TemplateResponse(request, "admin/pushing/send_broadcast.html", context)
        text, title = request.POST.get("text", ""), request.POST.get("title", "")
        agent_keys = request.POST.getlist("agents")
        context.update(text=text, title_text=title, chosen=agent_keys)
        try:
            if request.POST.get("confirm") == "yes":
                broadcast = services.send_broadcast(
                    text, title=title, agent_keys=agent_keys, actor=actor_name(request.user)
                )
                self.message_user(
                    request,
                    f"Broadcast #{broadcast.pk} sent to {broadcast.total_targets} user(s); "
                    "each is a queue job, enqueued now and followed below.",
                )
                return redirect(reverse("admin:pushing_pushbroadcast_changelist"))
            if not text.strip():
                raise services.PushError("The text is required.")
            context["preview"] = services.preview_broadcast(agent_keys)
        except services.PushError as exc:
            context["error"] = str(exc)
        return TemplateResponse(request, "admin/pushing/send_broadcast.html", context)




class PushTemplateForm(TenantFormMixin, forms.ModelForm):
    class Meta:
        model = PushTemplate
        fields = [
            "tenant",
            "agent",
            "key",
            "title",
            "text",
            "periodicity",
            "suggested_times",
            "enabled",
        ]

    def clean(self):
        cleaned = super().clean()
        self.check_tenant(cleaned)
        periodicity = cleaned.get("periodicity")
        times = cleaned.get("suggested_times") or []
        if not isinstance(times, list):
            raise forms.ValidationError("Suggested times must be a list of schedules.")
        if periodicity == "manual" and times:
            raise forms.ValidationError("A manual template takes no suggested times.")
        for index, item in enumerate(times):
            try:
                parse_slot(periodicity or "", "UTC", item)
            except ScheduleError as exc:
                raise forms.ValidationError(f"Suggested time {index + 1}: {exc}")
        return cleaned


@admin.register(PushTemplate)
class PushTemplateAdmin(AuditedModelAdmin):
    form = PushTemplateForm
    list_display = ["key", "tenant", "agent", "title", "periodicity", "enabled", "updated_at"]
    list_filter = ["tenant", "periodicity", "enabled"]
    list_select_related = ["tenant", "agent"]
    search_fields = ["key", "title", "text"]
    audit_prefix = "push_template"


class MessageTemplateForm(TenantFormMixin, forms.ModelForm):
    class Meta:
        model = MessageTemplate
        fields = ["tenant", "agent", "title", "text", "tags", "enabled"]

    def clean(self):
        cleaned = super().clean()
        self.check_tenant(cleaned)
        return cleaned

    def clean_tags(self):
        tags = self.cleaned_data.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise forms.ValidationError("Tags must be a list of strings.")
        return sorted({t.strip().lower() for t in tags if t.strip()})


@admin.register(MessageTemplate)
class MessageTemplateAdmin(AuditedModelAdmin):
    form = MessageTemplateForm
    list_display = ["slug", "tenant", "agent", "title", "usage_count", "enabled", "updated_at"]
    list_filter = ["tenant", "enabled"]
    list_select_related = ["tenant", "agent"]
    search_fields = ["slug", "title", "text"]
    readonly_fields = ["slug", "usage_count"]
    audit_prefix = "message_template"

    def save_model(self, request, obj, form, change):
        if not change or "title" in form.changed_data:
            obj.slug = template_services.unique_slug(obj.title, obj.pk, obj.tenant_id)
        obj.updated_by = actor_name(request.user)
        super().save_model(request, obj, form, change)
