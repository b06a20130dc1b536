from agents.audit import actor_name
from telegram.management.commands._base import TelegramCommand
from telegram.pairing import create_pairing_code, deep_link


class Command(TelegramCommand):
    help = "Create a pairing code (and deep link) for CONSUMER_USER_ID on AGENT_KEY's bot."

    def add_arguments(self, parser):
        parser.add_argument("consumer_user_id")
        parser.add_argument("agent_key")
        parser.add_argument(
            "--ttl-minutes",
            type=int,
            default=None,
            help="Lifetime, clamped to 1 minute … 24 hours (default 15).",
        )

    def handle(self, *args, consumer_user_id, agent_key, ttl_minutes, **options):
        code = create_pairing_code(
            consumer_user_id,
            agent_key,
            actor=actor_name(command="create_pairing_code"),
            ttl_minutes=ttl_minutes,
        )
        link = deep_link(code.agent.bot.username, code.code)
        data = {
            "code": code.code,
            "deep_link": link,
            "expires_at": code.expires_at.isoformat(),
            "agent_key": agent_key,
            "consumer_user_id": code.consumer_user_id,
            "bot_identity": code.bot_identity,
        }
        self.emit(options, data, f"{code.code}\n{link}\nexpires {code.expires_at.isoformat()}")
