"""The admin base class that writes an audit row for every add, change and delete."""

from __future__ import annotations

from django.contrib import admin
from django.db import transaction

from agents.audit import actor_name, record_audit


class AuditedModelAdmin(admin.ModelAdmin):
    """Writes an AuditEvent for every add, change and delete made through the admin."""

    # Action names are "<audit_prefix>.add|change|delete"; the model name by default.
    audit_prefix: str | None = None

    def audit_action(self, verb: str) -> str:
        return f"{self.audit_prefix or self.model._meta.model_name}.{verb}"

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            record_audit(
                actor_name(request.user),
                self.audit_action("change" if change else "add"),
                obj,
                changed_fields=sorted(form.changed_data),
            )

    def audit_delete_details(self, obj) -> dict:
        return {"label": str(obj)}

    def delete_model(self, request, obj):
        with transaction.atomic():
            self._audit_delete(request, obj)
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for obj in queryset:
                self._audit_delete(request, obj)
            super().delete_queryset(request, queryset)

    def _audit_delete(self, request, obj):
        record_audit(
            actor_name(request.user),
            self.audit_action("delete"),
            obj,
            **self.audit_delete_details(obj),
        )
