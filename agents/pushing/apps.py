"""The pushing app: scheduled pushes, broadcasts and message templates (SPEC §14).

Its own app (label ``pushing``) so its tables, migrations and admin stay out of the ground
floor: ``agents``' base modules import no other app, this one stands on top of them all.
"""

from django.apps import AppConfig


class PushingConfig(AppConfig):
    name = "agents.pushing"
    label = "pushing"
    verbose_name = "Pushing and templates"
    default_auto_field = "django.db.models.BigAutoField"
