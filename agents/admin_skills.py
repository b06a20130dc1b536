"""Admin for global skills: skills, immutable versions (publish) and per-channel releases."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from agents.admin_access import ReadOnlyAdminMixin, confirmation_page, require
from agents.admin_audited import AuditedModelAdmin
from agents.audit import actor_name
from agents.models import GlobalSkill, GlobalSkillRelease, GlobalSkillVersion
from agents.skills import SkillError, activate_release, publish_skill


class GlobalSkillVersionInline(admin.TabularInline):
    model = GlobalSkillVersion
    extra = 0
    fields = ["version", "module_format", "entry_point", "bundle_sha256", "created_at"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True


@admin.register(GlobalSkill)
class GlobalSkillAdmin(AuditedModelAdmin):
    list_display = ["slug", "name", "status", "updated_at"]
    list_filter = ["status"]
    search_fields = ["slug", "name"]
    inlines = [GlobalSkillVersionInline]


class PublishSkillForm(forms.Form):
    slug = forms.CharField(max_length=128)
    version = forms.CharField(max_length=64)
    channel = forms.ChoiceField(choices=GlobalSkillRelease.CHANNEL_CHOICES)
    module_format = forms.ChoiceField(choices=GlobalSkillVersion.FORMAT_CHOICES)
    bundle_json = forms.CharField(
        widget=forms.Textarea, help_text="The output of 'manage.py skill_bundle DIR'."
    )


@admin.register(GlobalSkillVersion)
class GlobalSkillVersionAdmin(AuditedModelAdmin):
    """Versions are immutable: publish new ones, then activate a release per channel."""

    list_display = ["skill", "version", "module_format", "bundle_sha256", "created_at"]
    list_filter = ["skill", "module_format"]
    search_fields = ["skill__slug", "version", "bundle_sha256", "created_by"]
    readonly_fields = [
        "skill",
        "version",
        "module_format",
        "entry_point",
        "files",
        "bundle_sha256",
        "created_by",
        "created_at",
    ]
    actions = ["activate_stable", "activate_canary"]

    def has_change_permission(self, request, obj=None):
        return request.method != "POST" and super().has_change_permission(request, obj)

    def add_view(self, request, form_url="", extra_context=None):

        # This replaces Django's add view, so its permission check too (SPEC §16: publishing
        # needs agents.add_globalskillversion).
        require(
            request,
            self.has_add_permission(request),
            door="publish_skill",
            permission="agents.add_globalskillversion",
        )
        form = PublishSkillForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                files = json.loads(form.cleaned_data["bundle_json"]).get("files")
                version = publish_skill(
                    form.cleaned_data["slug"],
                    form.cleaned_data["version"],
                    files,
                    actor=actor_name(request.user),
                    channel=form.cleaned_data["channel"],
                    module_format=form.cleaned_data["module_format"],
                )
            except (ValueError, AttributeError, SkillError) as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Published {version}.")
                return redirect("admin:agents_globalskillversion_changelist")
        return TemplateResponse(
            request,
            "admin/agents/publish_skill.html",
            {
                **self.admin_site.each_context(request),
                "form": form,
                "title": "Publish a global skill version",
                "opts": self.model._meta,
            },
        )

    def _activate(self, request, queryset, channel):

        page = confirmation_page(
            self,
            request,
            queryset,
            action=f"activate_{channel}",
            title=f"Activate these versions on the {channel} channel?",
            note=f"Every worker on the {channel} channel loads these versions from its next "
            "job, in place of the release active now.",
        )
        if page is not None:
            return page

        for version in queryset:
            activate_release(version, channel=channel, actor=actor_name(request.user))
        self.message_user(request, f"{queryset.count()} release(s) activated on {channel}.")

    def has_activate_permission(self, request):
        # Activating changes which release of a skill every worker loads: the release model's
        # change permission (publishing, which also activates, needs the add permission).
        return request.user.has_perm("agents.change_globalskillrelease")

    @admin.action(description="Activate on the stable channel", permissions=["activate"])
    def activate_stable(self, request, queryset):
        return self._activate(request, queryset, "stable")

    @admin.action(description="Activate on the canary channel", permissions=["activate"])
    def activate_canary(self, request, queryset):
        return self._activate(request, queryset, "canary")


@admin.register(GlobalSkillRelease)
class GlobalSkillReleaseAdmin(ReadOnlyAdminMixin, AuditedModelAdmin):
    list_display = ["skill", "version", "channel", "active", "activated_by", "activated_at"]
    list_filter = ["channel", "active", "skill"]
    search_fields = ["skill__slug", "version__version", "activated_by"]
    # A version's name includes its skill's slug: without version__skill, one query per row.
    list_select_related = ["skill", "version__skill"]
