"""Admin access shared by every app: refusing a door (403, and an audit row saying who tried
which door: a staff user probing doors they may not use is something a security reviewer
wants to see), and the read-only lists of rows only the system writes."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied

from agents.audit import actor_name, record_audit

DENIED = "admin.permission_denied"


def require(request, allowed: bool, *, door: str, permission: str) -> None:
    """Return if ``allowed``; otherwise audit the attempt and raise PermissionDenied."""
    if allowed:
        return
    # Its own autocommitted row: the 403 that follows must not roll it back.
    record_audit(
        actor_name(request.user),
        DENIED,
        door,
        permission=permission,
        method=request.method,
        path=request.path,
    )
    raise PermissionDenied


class ReadOnlyAdminMixin:
    """An admin list of rows only the system writes (audit events, updates, releases, …):
    viewed here, never added or edited. Deleting stays Django's delete permission, unless
    ``deletable = False`` (a record that must outlive any admin)."""

    deletable = True

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return self.deletable and super().has_delete_permission(request, obj)


def confirmation_page(model_admin, request, queryset, *, action: str, title: str, note: str):
    """The page a consequential admin action shows before acting (SPEC §16): what it
    affects, what it does, and a button that posts the action again with ``confirm=yes``.
    Returns None once confirmed, so the action goes on."""
    from django.template.response import TemplateResponse

    if request.POST.get("confirm") == "yes":
        return None
    return TemplateResponse(
        request,
        "admin/confirm_action.html",
        {
            **model_admin.admin_site.each_context(request),
            "title": title,
            "note": note,
            "action": action,
            "objects": queryset,
            "opts": model_admin.model._meta,
        },
    )
