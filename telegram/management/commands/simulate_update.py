import json
import secrets
import time

import requests
from django.conf import settings
from django.core.management.base import CommandError

from agents.secret_refs import webhook_secret_ref
from agents.secret_store import get_active_secret_value
from telegram.bots import webhook_url_for
from telegram.management.commands._base import TelegramCommand
from telegram.models import Bot


def build_text_update(text: str, *, user_id: int, chat_id: int) -> dict:
    # Unique enough for a demo: milliseconds plus randomness, within Telegram's int range.
    update_id = int(time.time() * 1000) % 2**40 * 1000 + secrets.randbelow(1000)
    return {
        "update_id": update_id,
        "message": {
            "message_id": secrets.randbelow(2**31),
            "from": {"id": user_id, "is_bot": False, "first_name": "Sandbox user"},
            "chat": {"id": chat_id, "type": "private"},
            "date": int(time.time()),
            "text": text,
        },
    }


class Command(TelegramCommand):
    help = "Post a correctly signed text update to this server's own webhook (demos, smoke tests)."

    def add_arguments(self, parser):
        parser.add_argument("agent_key")
        parser.add_argument("text")
        parser.add_argument("--telegram-user", type=int, default=424242)
        parser.add_argument("--chat", type=int, default=None, help="Chat id (default: the user).")
        parser.add_argument(
            "--base-url", default=None, help="Server URL (default PUBLIC_BASE_URL)."
        )

    def handle(self, *args, agent_key, text, telegram_user, chat, base_url, **options):
        if not text.strip():
            raise CommandError("TEXT must not be empty.")
        bot = Bot.objects.filter(agent__agent_key=agent_key).first()
        if bot is None:
            raise CommandError(f"Agent '{agent_key}' has no bot: import its token first.")
        secret = get_active_secret_value(webhook_secret_ref(agent_key))
        if not secret:
            raise CommandError(f"Agent '{agent_key}' has no webhook secret: configure the webhook.")
        base = (base_url or settings.PUBLIC_BASE_URL).rstrip("/")
        update = build_text_update(text, user_id=telegram_user, chat_id=chat or telegram_user)
        try:
            response = requests.post(
                webhook_url_for(bot.bot_identity, base),
                json=update,
                timeout=(5, 30),
                headers={"X-Telegram-Bot-Api-Secret-Token": secret},
            )
        except requests.RequestException as exc:
            raise CommandError(f"Could not reach {base}: {type(exc).__name__}")
        try:
            body = response.json()
        except ValueError:
            body = {"http_status": response.status_code}
        data = {"update_id": update["update_id"], "http_status": response.status_code, **body}
        self.emit(options, data, json.dumps(data))
        if response.status_code != 200:
            raise CommandError(f"The webhook answered {response.status_code}.")
