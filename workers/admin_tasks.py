"""django-q2's task lists, with their "resubmit" action behind a permission.

django-q2 offers "Resubmit selected tasks to queue" to anyone who can see its lists; a
resubmit runs the task again (and, from the failures, deletes the row). Here it needs the
change permission of the list's model, and on failures also the delete permission (SPEC §16:
view-only staff can change nothing). The lists themselves are django-q2's.
"""

from __future__ import annotations

from django.contrib import admin
from django_q import admin as q_admin
from django_q.models import Failure, Success

from agents.admin_access import confirmation_page

RESUBMIT = "Resubmit selected tasks to queue"
RESUBMIT_NOTE = (
    "Each task runs again (a task that sends a message sends it again); a resubmitted "
    "failure's row is deleted."
)


def resubmit_after_confirmation(model_admin, request, queryset):
    page = confirmation_page(
        model_admin,
        request,
        queryset,
        action="resubmit",
        title="Resubmit these tasks?",
        note=RESUBMIT_NOTE,
    )
    if page is not None:
        return page
    q_admin.resubmit_task(model_admin, request, queryset)
    return None


class SuccessAdmin(q_admin.TaskAdmin):
    actions = ["resubmit"]

    @admin.action(description=RESUBMIT, permissions=["change"])
    def resubmit(self, request, queryset):
        return resubmit_after_confirmation(self, request, queryset)


class FailureAdmin(q_admin.FailAdmin):
    actions = ["resubmit"]

    def has_resubmit_permission(self, request):
        # One method for both: Django offers an action when ANY listed permission holds.
        return self.has_change_permission(request) and self.has_delete_permission(request)

    @admin.action(description=RESUBMIT, permissions=["resubmit"])
    def resubmit(self, request, queryset):
        # Deletes the failure rows it resubmits.
        return resubmit_after_confirmation(self, request, queryset)


for model, model_admin in ((Success, SuccessAdmin), (Failure, FailureAdmin)):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)
