"""Log filters. Telegram puts the bot token in the request path (``/bot<token>/method``), so
any log line that could carry such a path goes through ``RedactBotTokens``."""

from __future__ import annotations

import logging
import re

BOT_TOKEN = re.compile(r"bot\d{1,20}:[A-Za-z0-9_\-]{10,}")


class RedactBotTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if BOT_TOKEN.search(message):
            record.msg = BOT_TOKEN.sub("bot<redacted>", message)
            record.args = ()
        return True
