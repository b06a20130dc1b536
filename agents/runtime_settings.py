"""Per-agent runtime settings (SPEC §21): which handler a worker runs for the agent, with
which model, endpoint, key and parameters — their rules, the ``--runtime-json`` parser and
the "model key present" readiness item. Imports no other app (the secret store lazily)."""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

BUILT_IN_HANDLERS = ("echo", "llm", "openclaw", "http")
# Handlers that call a model: they need a model name (and usually a key).
MODEL_HANDLERS = ("llm", "openclaw")
DOTTED_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
DEFAULT_TIMEOUT_SECONDS = 120


def validate_handler(value: str) -> None:
    if value in BUILT_IN_HANDLERS or DOTTED_PATH.match(value or ""):
        return
    raise ValidationError(
        f"Handler must be one of {', '.join(BUILT_IN_HANDLERS)} or a dotted path "
        f"(package.module.function); got {value!r}.",
        code="bad_handler",
    )


def validate_base_url(value: str) -> None:
    parts = urlsplit(value or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationError(
            f"Base URL must be an http(s) URL such as https://api.openai.com/v1; got {value!r}.",
            code="bad_base_url",
        )
    if parts.username or parts.password:
        raise ValidationError(
            "Base URL must not carry credentials: store the key in the secret store.",
            code="bad_base_url",
        )


def validate_model_name(value: str) -> None:
    if value and (len(value) > 200 or any(ch.isspace() for ch in value)):
        raise ValidationError(
            "Model must be a name without spaces (e.g. gpt-4o-mini or openai/gpt-4o-mini).",
            code="bad_model",
        )


def validate_secret_ref(value: str) -> None:
    from agents.models import secret_ref_validator  # one definition of a ref's shape

    secret_ref_validator(value)


class AgentRuntimeFields(models.Model):
    """The runtime settings of an agent profile (``AgentProfile`` inherits them)."""

    # Runtime (SPEC §21): what a worker runs for this agent, delivered in the hydration.
    handler = models.CharField(
        max_length=200,
        default="echo",
        validators=[validate_handler],
        help_text="echo, llm, openclaw, http or a dotted path importable in the worker.",
    )
    model = models.CharField(
        max_length=200,
        blank=True,
        validators=[validate_model_name],
        help_text="Sent to the endpoint as given (e.g. gpt-4o-mini, openai/gpt-4o-mini).",
    )
    base_url = models.CharField(
        max_length=500,
        blank=True,
        validators=[validate_base_url],
        help_text="OpenAI-compatible endpoint (…/v1); empty: the handler's default.",
    )
    api_key_secret_ref = models.CharField(
        max_length=200,
        blank=True,
        validators=[validate_secret_ref],
        help_text="The secret holding the model API key (only its name is stored here).",
    )
    temperature = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.0), MaxValueValidator(2.0)]
    )
    max_tokens = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(1_000_000)]
    )
    timeout_seconds = models.PositiveIntegerField(
        default=DEFAULT_TIMEOUT_SECONDS,
        validators=[MinValueValidator(1), MaxValueValidator(3600)],
        help_text="One model call's time limit.",
    )
    system_prompt = models.TextField(
        blank=True, help_text="Empty: the runtime config's system prompt."
    )
    price_per_million_input_tokens = models.DecimalField(
        max_digits=12, decimal_places=6, default=0, validators=[MinValueValidator(0)]
    )
    price_per_million_output_tokens = models.DecimalField(
        max_digits=12, decimal_places=6, default=0, validators=[MinValueValidator(0)]
    )
    # Budget cap (SPEC §24): usage cost is summed per calendar month (UTC).
    monthly_budget_usd = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Estimated cost this agent may spend per calendar month (UTC); empty: no "
        "cap. Warning at 80 %, new messages paused at 100 %.",
    )

    class Meta:
        abstract = True


def check_profile_runtime(profile) -> dict:
    """Rules across fields, for ``AgentProfile.clean``: {field: message} of what is wrong."""
    errors = {}
    if profile.handler in MODEL_HANDLERS and not profile.model:
        errors["model"] = f"The {profile.handler} handler needs a model name."
    return errors


# ``configure_agent --runtime-json``: key → (type check, description for errors).
RUNTIME_JSON_KEYS = {
    "handler": (str, "a string"),
    "model": (str, "a string"),
    "base_url": (str, "a string"),
    "api_key_secret_ref": (str, "a string"),
    "temperature": ((int, float), "a number"),
    "max_tokens": (int, "an integer"),
    "timeout_seconds": (int, "an integer"),
    "system_prompt": (str, "a string"),
    "delivery": (str, "a string"),
    "price_per_million_input_tokens": ((int, float, str), "a number"),
    "price_per_million_output_tokens": ((int, float, str), "a number"),
}
# What a null resets a setting to.
RUNTIME_DEFAULTS = {
    "handler": "echo",
    "model": "",
    "base_url": "",
    "api_key_secret_ref": "",
    "temperature": None,
    "max_tokens": None,
    "timeout_seconds": DEFAULT_TIMEOUT_SECONDS,
    "system_prompt": "",
    "delivery": "server",
    "price_per_million_input_tokens": Decimal("0"),
    "price_per_million_output_tokens": Decimal("0"),
}


def parse_runtime_json(raw: str) -> dict:
    """The runtime settings named in ``raw`` (a JSON object) as profile field values; keys
    not named keep their value, ``null`` resets one. ValueError with a clear sentence."""
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"--runtime-json is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("--runtime-json must be a JSON object.")
    if "api_key" in value:
        raise ValueError(
            "--runtime-json takes no plaintext key: store it with `import_secret REF` "
            "(reading stdin) and name it in api_key_secret_ref."
        )
    unknown = sorted(set(value) - set(RUNTIME_JSON_KEYS))
    if unknown:
        raise ValueError(
            f"Unknown runtime key(s): {', '.join(unknown)}. "
            f"Allowed: {', '.join(RUNTIME_JSON_KEYS)}."
        )
    fields = {}
    for key, item in value.items():
        expected, described = RUNTIME_JSON_KEYS[key]
        if item is None:
            fields[key] = RUNTIME_DEFAULTS[key]
            continue
        if isinstance(item, bool) or not isinstance(item, expected):
            raise ValueError(f"Runtime '{key}' must be {described}.")
        if key.startswith("price_"):
            try:
                item = Decimal(str(item))
            except InvalidOperation:
                raise ValueError(f"Runtime '{key}' must be a number.") from None
        fields[key] = item
    return fields


def runtime_dict(profile) -> dict:
    """The profile's runtime settings as JSON values (the key's ref, never the key)."""
    data = {key: getattr(profile, key) for key in RUNTIME_JSON_KEYS}
    for key in ("price_per_million_input_tokens", "price_per_million_output_tokens"):
        data[key] = str(data[key])
    return data


def model_key_needed(profile) -> bool:
    """A model handler with no endpoint of its own goes to a hosted API, which needs a key
    (a self-hosted endpoint — Ollama, vLLM — may run without one)."""
    return bool(profile.api_key_secret_ref) or (
        profile.handler in MODEL_HANDLERS and not profile.base_url
    )


def model_key_status(profile) -> tuple[bool, str]:
    """Readiness item "model key present": (ok, reason). Never reads the value."""
    from agents.secret_store import has_active_secret

    ref = profile.api_key_secret_ref
    if ref:
        if has_active_secret(ref):
            return True, f"key stored ({ref})"
        return False, f"no active secret '{ref}': set the key in the admin or import_secret"
    if model_key_needed(profile):
        return False, f"the {profile.handler} handler needs an API key (api_key_secret_ref)"
    return True, "no key needed"
