"""Creating and revoking consumer API keys: one place for the admin and ``create_api_key``."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from agents.audit import record_audit
from agents.consumer_api.idempotency import RETENTION
from agents.consumer_api.models import ApiKey, IdempotencyRecord
from agents.consumer_api.webhooks import WebhookUrlError, new_secret, validate_webhook_url
from agents.models import AgentProfile, Tenant
from agents.secret_refs import api_key_webhook_secret_ref
from agents.secret_store import import_secret


class ApiKeyError(ValueError):
    """Bad input for a key (unknown tenant or agent, agent of another tenant)."""


@dataclass
class CreatedKey:
    api_key: ApiKey
    key: str  # the plaintext, shown once
    webhook_secret: str | None


def create_api_key(
    name: str,
    *,
    actor: str,
    tenant: str = Tenant.DEFAULT_SLUG,
    agent_keys: list[str] | None = None,
    read_only: bool = False,
    webhook_url: str = "",
) -> CreatedKey:
    name = (name or "").strip()
    if not name or len(name) > 50:
        raise ApiKeyError("The key's name must be 1-50 characters.")
    tenant_row = Tenant.objects.filter(slug=tenant).first()
    if tenant_row is None:
        if tenant != Tenant.DEFAULT_SLUG:
            raise ApiKeyError(f"Tenant '{tenant}' not found.")
        tenant_row = Tenant.objects.create(slug=tenant, name="Default")
    agents = []
    for agent_key in dict.fromkeys(agent_keys or []):
        agent = AgentProfile.objects.filter(agent_key=agent_key).first()
        if agent is None or agent.tenant_id != tenant_row.pk:
            raise ApiKeyError(f"Agent '{agent_key}' not found in tenant '{tenant}'.")
        agents.append(agent)
    try:
        webhook_url = validate_webhook_url(webhook_url)
    except WebhookUrlError as exc:
        raise ApiKeyError(str(exc)) from None
    webhook_secret = new_secret() if webhook_url else None
    with transaction.atomic():
        api_key, key = ApiKey.objects.create_key(
            name=name,
            tenant=tenant_row,
            mode=ApiKey.READ if read_only else ApiKey.READ_WRITE,
            webhook_url=webhook_url,
        )
        api_key.agents.set(agents)
        if webhook_secret:
            import_secret(api_key_webhook_secret_ref(api_key.prefix), webhook_secret, actor=actor)
        record_audit(
            actor,
            "consumer_api.create_key",
            api_key,
            tenant=tenant,
            agents=[a.agent_key for a in agents],
            mode=api_key.mode,
        )
    return CreatedKey(api_key=api_key, key=key, webhook_secret=webhook_secret)


def revoke_api_key(api_key: ApiKey, *, actor: str) -> bool:
    with transaction.atomic():
        changed = ApiKey.objects.filter(pk=api_key.pk, revoked=False).update(revoked=True)
        if changed:
            record_audit(actor, "consumer_api.revoke_key", api_key)
    return bool(changed)


def expire_idempotency_records(now=None) -> int:
    """Deletes records older than 24 h (the replay window of SPEC §15)."""
    cutoff = (now or timezone.now()) - RETENTION
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted
