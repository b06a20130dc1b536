"""The agent profile's runtime settings in the admin (SPEC §21): the form with the
write-only model key, its fieldsets, and the save that stores a typed key in the store."""

from __future__ import annotations

from django import forms
from django.db import transaction

from agents.models import AgentProfile
from agents.runtime_settings import model_key_status
from agents.secret_refs import model_api_key_ref
from agents.secret_store import SecretStoreError, import_secret, validate_secret_input
from agents.services import save_agent_profile

RUNTIME_FIELDS = [
    "handler",
    "model",
    "base_url",
    "api_key_secret_ref",
    "api_key",
    "model_key_state",
    "temperature",
    "max_tokens",
    "timeout_seconds",
    "system_prompt",
    "price_per_million_input_tokens",
    "price_per_million_output_tokens",
    "monthly_budget_usd",
]
PROFILE_FIELDSETS = [
    (
        None,
        {
            "fields": [
                "agent_key",
                "enabled",
                "require_telegram_binding",
                "delivery",
                "secrets_ref",
                "bridge_config",
            ]
        },
    ),
    ("Runtime (what a worker runs for this agent)", {"fields": RUNTIME_FIELDS}),
    (None, {"fields": ["version", "created_at", "updated_at"]}),
]


class AgentProfileAdminForm(forms.ModelForm):
    """The model key is write-only: typed in, stored in the secret store, never shown."""

    api_key = forms.CharField(
        label="Model API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Stored encrypted in the secret store (a new version of the ref above, or "
        "of agent.modelApiKey.<agent key> when it is empty). Leave empty to keep the key.",
    )

    class Meta:
        model = AgentProfile
        exclude: list[str] = []

    def clean(self):
        cleaned = super().clean()
        key = cleaned.get("api_key")
        if key:
            ref = cleaned.get("api_key_secret_ref") or model_api_key_ref(
                cleaned.get("agent_key") or "agent"
            )
            try:
                validate_secret_input(ref, key)
            except SecretStoreError as exc:  # the store's messages never hold the value
                self.add_error("api_key", str(exc))
        return cleaned


def describe_model_key(obj) -> str:
    """Only whether a key is stored, and why it matters: the value is never displayed."""
    if obj is None or not obj.pk:
        return "not set"
    ok, reason = model_key_status(obj)
    return ("set" if obj.api_key_secret_ref and ok else "not set") + f" ({reason})"


def save_profile_with_key(obj: AgentProfile, form, *, actor: str, created: bool) -> None:
    changed = [name for name in form.changed_data if name != "api_key"]
    with transaction.atomic():
        key = form.cleaned_data.get("api_key")
        if key:
            obj.api_key_secret_ref = obj.api_key_secret_ref or model_api_key_ref(obj.agent_key)
            import_secret(
                obj.api_key_secret_ref,
                key,
                actor=actor,
                metadata={"source": "admin", "agent_key": obj.agent_key},
            )
            changed = sorted({*changed, "api_key_secret_ref"})
        save_agent_profile(obj, actor=actor, created=created, changed=changed)
