from django.apps import AppConfig


class WorkersConfig(AppConfig):
    name = "workers"

    def ready(self) -> None:
        from workers import checks  # noqa: F401  (registers system checks)
        from workers.claim_wait import connect_signals

        connect_signals()  # new messages wake long-poll claims (SPEC §7)
