import getpass
import sys

from django.core.management.base import CommandError

from agents.audit import actor_name
from telegram.bots import import_telegram_token, old_webhook_warning
from telegram.management.commands._base import TelegramCommand


class Command(TelegramCommand):
    help = "Verify a bot token (read from stdin) with getMe and store it for AGENT_KEY."

    def add_arguments(self, parser):
        parser.add_argument("agent_key")
        parser.add_argument(
            "--replace-bot",
            action="store_true",
            help="Switch the agent to a different bot, revoking its bindings.",
        )

    def handle(self, *args, agent_key, replace_bot, **options):
        # Never a command-line argument (it would land in shell history and `ps`): piped in,
        # or typed without echo at a terminal.
        token = (getpass.getpass("Bot token: ") if sys.stdin.isatty() else sys.stdin.read()).strip()
        if not token:
            raise CommandError("No token on stdin: pipe the bot token into this command.")
        result = import_telegram_token(
            agent_key,
            token,
            actor=actor_name(command="import_telegram_token"),
            replace_bot=replace_bot,
        )
        bot = result.bot
        data = {
            "agent_key": agent_key,
            "bot_identity": bot.bot_identity,
            "username": bot.username,
            "rotated": result.rotated,
            "replaced_bot": result.replaced_bot,
            "revoked_bindings": result.revoked_bindings,
            "expired_pairings": result.expired_pairings,
            "webhook_verified": (result.webhook or {}).get("verified"),
            "webhook_error": result.webhook_error,
            "old_webhook_deleted": result.old_webhook_deleted,
            "old_webhook_error": result.old_webhook_error,
        }
        self.emit(
            options,
            data,
            f"Stored token for @{bot.username} ({bot.bot_identity}) "
            f"on agent '{agent_key}'" + (" (rotation)." if result.rotated else "."),
        )
        for warning in (result.webhook or {}).get("warnings", []):
            self.stderr.write(f"Warning: {warning}")
        if result.old_webhook_error:
            self.stderr.write(f"Warning: {old_webhook_warning(result)}")
        if result.webhook_error:
            raise CommandError(
                f"Token stored, but setting the webhook again failed ({result.webhook_error}); "
                "run configure_telegram_webhook."
            )
