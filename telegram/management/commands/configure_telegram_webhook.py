from agents.audit import actor_name
from telegram.bots import configure_webhook
from telegram.management.commands._base import TelegramCommand


class Command(TelegramCommand):
    help = "Set the bot's webhook to this server with a fresh secret, and verify it."

    def add_arguments(self, parser):
        parser.add_argument("agent_key")
        parser.add_argument("--base-url", help="Public base URL (default PUBLIC_BASE_URL).")

    def handle(self, *args, agent_key, base_url, **options):
        result = configure_webhook(
            agent_key, actor=actor_name(command="configure_telegram_webhook"), base_url=base_url
        )
        for warning in result["warnings"]:
            self.stderr.write(f"Warning: {warning}")
        state = "verified" if result["verified"] else "NOT verified"
        self.emit(options, result, f"Webhook {result['webhook_url']} set ({state}).")
