"""Reply media in the outbox (SPEC §22): how a reply with files becomes rows, and how a
file row is sent (a multipart sendPhoto, sendDocument, …).

Layout: the reply's text rides as the first file's caption when it fits Telegram's
1024-character caption in one piece; otherwise the text goes first as its own messages
(split at 4096) and the files follow without a caption. One row per file, in the order
the worker listed them, so the chat's order is the reply's order.
"""

from __future__ import annotations

from telegram.bot_api import TelegramApiError
from telegram.formatting import Part, reply_parts

CAPTION_LIMIT = 1024
# Bot API method and form field per media kind.
METHODS = {
    "photo": ("sendPhoto", "photo"),
    "document": ("sendDocument", "document"),
    "audio": ("sendAudio", "audio"),
    "voice": ("sendVoice", "voice"),
    "video": ("sendVideo", "video"),
}


def layout(text: str, text_format: str, media: list[dict]) -> list[tuple[Part | None, dict]]:
    """``(text part or None, media item or {})`` per row, in sending order."""
    if not media:
        return [(part, {}) for part in reply_parts(text, text_format)]
    caption = reply_parts(text, text_format, limit=CAPTION_LIMIT)
    if len(caption) <= 1:
        first = caption[0] if caption else None
        return [(first if index == 0 else None, item) for index, item in enumerate(media)]
    return [(part, {}) for part in reply_parts(text, text_format)] + [
        (None, item) for item in media
    ]


def send_media(client, row, *, plain: bool = False):
    """One file row as a multipart call; the caption as plain text when ``plain``."""
    method, field = METHODS[row.media_kind]
    upload = row.media_upload
    if upload is None or not upload.file:
        # Permanent: the sweep deleted it (retention) or it never was stored.
        raise TelegramApiError(method, 400, "the reply's file is no longer stored (expired)")
    payload = {"chat_id": row.chat_id}
    caption = row.plain_text if plain else row.text
    if caption:
        payload["caption"] = caption
        if row.parse_mode and not plain:
            payload["parse_mode"] = row.parse_mode
    if row.reply_markup:
        payload["reply_markup"] = row.reply_markup
    try:
        handle = upload.file.open("rb")
    except OSError:
        raise TelegramApiError(method, 400, "the reply's file cannot be read") from None
    with handle:
        return client.send_file_once(method, payload, field, upload.file_name, handle)
