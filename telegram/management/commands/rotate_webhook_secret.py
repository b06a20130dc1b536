from agents.audit import actor_name
from telegram.bots import rotate_webhook_secret
from telegram.management.commands._base import TelegramCommand


class Command(TelegramCommand):
    help = "Rotate the webhook secret; the previous one stays valid for 10 minutes."

    def add_arguments(self, parser):
        parser.add_argument("agent_key")

    def handle(self, *args, agent_key, **options):
        result = rotate_webhook_secret(agent_key, actor=actor_name(command="rotate_webhook_secret"))
        self.emit(options, result, f"Webhook secret rotated for '{agent_key}'.")
