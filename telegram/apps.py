from django.apps import AppConfig


class TelegramConfig(AppConfig):
    name = "telegram"

    def ready(self) -> None:
        from telegram import checks  # noqa: F401  (registers system checks)
