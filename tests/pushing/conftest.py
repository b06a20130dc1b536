"""Bound users and push jobs for the pushing tests."""

from __future__ import annotations

import datetime as dt

import pytest

from agents.pushing.services import save_push_job
from telegram.models import IdentityBinding


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def bind(db):
    def make(user: str, agent, *, chat: str | None = "auto", status="active"):
        chat_id = f"9{abs(hash(user)) % 10**8}" if chat == "auto" else (chat or "")
        return IdentityBinding.objects.create(
            consumer_user_id=user,
            agent=agent,
            conversation_id=f"user-agent:{agent.agent_key}:{user}",
            bot_identity="100",
            telegram_user_id=chat_id,
            telegram_chat_id=chat_id,
            status=status,
            source="telegram_pairing",
        )

    return make


@pytest.fixture
def make_job(db):
    def make(user="u1", *, time="08:00", now="2026-01-01T07:59Z", **kwargs):
        fields = {
            "actor": "test",
            "text": "Good morning",
            "periodicity": "daily",
            "timezone_name": "UTC",
            "schedule": {"time": time},
            "consumer_user_id": user,
            **kwargs,
        }
        return save_push_job(now=utc(now), **fields)

    return make
