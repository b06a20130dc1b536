"""Shared plumbing for the telegram commands: JSON output and clear one-line errors."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from agents.management.base import JsonOutput
from agents.secret_store import SecretUnavailable
from telegram.bots import TelegramSetupError
from telegram.pairing import PairingError


class TelegramCommand(JsonOutput, BaseCommand):
    errors = (TelegramSetupError, PairingError, SecretUnavailable)
