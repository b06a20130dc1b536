from django.conf import settings
from django.core.management.base import CommandError

from agents.audit import actor_name
from agents.models import AgentProfile
from telegram.bots import configure_webhook, import_telegram_token, webhook_url_for
from telegram.management.commands._base import TelegramCommand
from telegram.models import Bot

DEMO_AGENT = "demo"
DEMO_TOKEN = "1000001:sandbox-demo-token"


class Command(TelegramCommand):
    help = "Sandbox only: create the 'demo' agent with a sandbox bot and its webhook (idempotent)."

    def handle(self, *args, **options):
        if "/sandbox/telegram" not in settings.TELEGRAM_API_BASE_URL:
            raise CommandError(
                "TELEGRAM_API_BASE_URL does not point at the sandbox; refusing to seed a demo "
                "bot against a real Telegram."
            )
        actor = actor_name(command="setup_sandbox_demo")
        AgentProfile.objects.get_or_create(agent_key=DEMO_AGENT)
        bot = Bot.objects.filter(agent__agent_key=DEMO_AGENT).first()
        if bot is None:
            bot = import_telegram_token(DEMO_AGENT, DEMO_TOKEN, actor=actor).bot
        # Again when the server moved (another PORT): the webhook must name this server.
        if not bot.webhook_verified or bot.webhook_url != webhook_url_for(bot.bot_identity):
            configure_webhook(DEMO_AGENT, actor=actor)
            bot.refresh_from_db()
        self.emit(
            options,
            {"agent_key": DEMO_AGENT, "bot_identity": bot.bot_identity},
            f"Sandbox demo agent '{DEMO_AGENT}' is ready (bot @{bot.username}).",
        )
