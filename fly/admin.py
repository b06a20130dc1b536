"""Fly cleanup in the admin: past runs, and a dry-run preview before a confirmed apply."""

from __future__ import annotations

from django.contrib import admin, messages
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from agents.admin_access import ReadOnlyAdminMixin, require
from agents.audit import actor_name
from fly.cleanup import CleanupError, run_fly_cleanup
from fly.models import FlyCleanupRun


@admin.register(FlyCleanupRun)
class FlyCleanupRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "actor", "target_id", "summary"]
    search_fields = ["actor", "target_id"]
    date_hierarchy = "created_at"
    change_list_template = "admin/fly/cleanup_changelist.html"
    deletable = False  # the runs are audit rows

    def get_queryset(self, request):
        return super().get_queryset(request).filter(action="fly.cleanup")

    def has_view_permission(self, request, obj=None):
        # Whoever may run a cleanup may see the past runs and the preview.
        return super().has_view_permission(request, obj) or self.has_run_cleanup_permission(request)

    def has_run_cleanup_permission(self, request):
        return request.user.has_perm("fly.run_cleanup")

    @admin.display(description="Report")
    def summary(self, obj):
        d = obj.details
        return format_html(
            "machines {}/{} deleted, volumes {}/{} deleted, {} error(s)",
            d.get("machines_deleted"),
            d.get("machines_found"),
            d.get("volumes_deleted"),
            d.get("volumes_found"),
            len(d.get("errors", [])),
        )

    def get_urls(self):
        return [
            path("run/", self.admin_site.admin_view(self.run_view), name="fly_cleanup_run"),
        ] + super().get_urls()

    def run_view(self, request):
        # The dry-run preview only lists the app's machines and volumes: the view permission
        # (or run_cleanup) is enough. Applying destroys them all: fly.run_cleanup (SPEC §16).
        require(
            request,
            self.has_view_permission(request),
            door="fly_cleanup.preview",
            permission="fly.view_flycleanuprun",
        )
        can_apply = self.has_run_cleanup_permission(request)
        app = request.POST.get("app") or request.GET.get("app") or None
        try:
            if request.method == "POST" and request.POST.get("confirm") == "yes":
                require(request, can_apply, door="fly_cleanup.apply", permission="fly.run_cleanup")
                report = run_fly_cleanup(app=app, apply=True, actor=actor_name(request.user))
                level = messages.ERROR if report["errors"] else messages.SUCCESS
                self.message_user(
                    request,
                    f"Cleanup of {report['app_name']}: "
                    f"{report['machines_deleted']} machine(s), "
                    f"{report['volumes_deleted']} volume(s) destroyed; "
                    f"{len(report['errors'])} error(s).",
                    level,
                )
                return redirect(reverse("admin:fly_flycleanuprun_changelist"))
            report = run_fly_cleanup(app=app, apply=False)
        except CleanupError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return redirect(reverse("admin:fly_flycleanuprun_changelist"))
        return TemplateResponse(
            request,
            "admin/fly/cleanup_preview.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Destroy every machine and volume of {report['app_name']}?",
                "report": report,
                "can_apply": can_apply,
                "opts": self.model._meta,
            },
        )
