"""The parts of a Telegram update the webhook handles (SPEC §5.3 steps 4 and 7): who sent
it where, its text and its media. Pure parsing, no database."""

from __future__ import annotations

from dataclasses import dataclass, field

MEDIA_KINDS = ("photo", "video", "audio", "voice", "document")


@dataclass(frozen=True)
class Incoming:
    text: str
    user_id: str
    chat_id: str
    message_id: str | None
    attachments: list[dict] = field(default_factory=list)
    # Only a private chat is a place for pairing and for a binding's conversation (§5.2).
    private: bool = False


def _id(value) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip() and len(value) <= 32:
        return value.strip()
    return None


def _attachments(message: dict) -> list[dict]:
    found = []
    photos = message.get("photo")
    if isinstance(photos, list) and photos:
        sizes = [p for p in photos if isinstance(p, dict) and isinstance(p.get("file_id"), str)]
        if sizes:
            # The largest rendition: by pixel count, then by file size.
            best = max(
                sizes,
                key=lambda p: (
                    (p.get("width") or 0) * (p.get("height") or 0)
                    if isinstance(p.get("width"), int) and isinstance(p.get("height"), int)
                    else 0,
                    p.get("file_size") if isinstance(p.get("file_size"), int) else 0,
                ),
            )
            found.append(_attachment("photo", best))
    for kind in MEDIA_KINDS[1:]:
        item = message.get(kind)
        if isinstance(item, dict) and isinstance(item.get("file_id"), str):
            found.append(_attachment(kind, item))
    return found


def _attachment(kind: str, item: dict) -> dict:
    size = item.get("file_size")
    return {
        "kind": kind,
        "status": "pending",
        "telegram_file_id": item["file_id"][:255],
        "file_name": str(item.get("file_name") or "")[:255],
        "mime_type": str(item.get("mime_type") or "")[:100],
        "size_bytes": size if isinstance(size, int) and not isinstance(size, bool) else None,
    }


def extract(update: dict) -> Incoming | None:
    """The parts we handle, or None for update types and shapes we ignore."""
    message = update.get("message") or update.get("edited_message")
    text_override = None
    if message is None and isinstance(update.get("callback_query"), dict):
        query = update["callback_query"]
        message = query.get("message")
        if isinstance(message, dict):
            message = {**message, "from": query.get("from")}
        data = query.get("data")
        text_override = data if isinstance(data, str) else None
    if not isinstance(message, dict):
        return None
    sender = message.get("from")
    chat = message.get("chat")
    if not isinstance(sender, dict) or not isinstance(chat, dict):
        return None
    user_id, chat_id = _id(sender.get("id")), _id(chat.get("id"))
    if user_id is None or chat_id is None:
        return None
    text = text_override
    if text is None:
        raw = message.get("text")
        if not isinstance(raw, str):
            raw = message.get("caption")
        text = raw if isinstance(raw, str) else ""
    attachments = _attachments(message)
    if not text.strip() and not attachments:
        return None
    return Incoming(
        text=text[:20_000],
        user_id=user_id,
        chat_id=chat_id,
        message_id=_id(message.get("message_id")),
        attachments=attachments,
        private=chat.get("type") == "private",
    )
