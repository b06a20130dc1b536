from django.apps import AppConfig


class FlyConfig(AppConfig):
    name = "fly"

    def ready(self):
        from django.db.models.signals import post_save

        from agents.models import RuntimeConfig
        from fly import checks  # noqa: F401  (registers system checks)
        from fly.cleanup import sync_nightly_schedule

        post_save.connect(
            sync_nightly_schedule, sender=RuntimeConfig, dispatch_uid="fly-nightly-schedule"
        )
