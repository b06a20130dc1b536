"""Every secret name the apps read or write, in one place (the secret store's refs, SPEC §4).

The names are the operators' contract (``import_secret telegram.botToken.alpha``, the
upstream package's names): they may never drift between the app that writes a secret and
the one that reads it, so every caller builds them here.
"""

from __future__ import annotations

BOT_TOKEN_PREFIX = "telegram.botToken."
WEBHOOK_SECRET_PREFIX = "telegram.webhookSecret."
FLY_API_TOKEN = "fly.apiToken"
MODEL_API_KEY_PREFIX = "agent.modelApiKey."
API_KEY_WEBHOOK_SECRET_PREFIX = "consumerApi.webhookSecret."

# The agent bridge (reference queue.md §5.2): each is looked up agent-scoped first
# (``<prefix>.<agent_key>``), then shared (``<prefix>``).
BRIDGE_SERVICE_KEY = "agent-bridge.serviceKey"
BRIDGE_BASE_URL_MAP_JSON = "agent-bridge.baseUrlMapJson"
BRIDGE_BASE_URL = "agent-bridge.baseUrl"
BRIDGE_SERVICE_ID = "agent-bridge.serviceId"
BRIDGE_APP_KEY = "agent-bridge.appKey"
BRIDGE_LINKING_SHARED_SECRET = "agent-bridge.linkingSharedSecret"


def bot_token_ref(agent_key: str) -> str:
    return BOT_TOKEN_PREFIX + agent_key


def model_api_key_ref(agent_key: str) -> str:
    """Where the admin stores an agent's model key when the profile names no ref (SPEC §21)."""
    return f"{MODEL_API_KEY_PREFIX}{agent_key}"


def api_key_webhook_secret_ref(api_key_prefix: str) -> str:
    """The HMAC secret of a consumer API key's event webhooks (SPEC §15)."""
    return API_KEY_WEBHOOK_SECRET_PREFIX + api_key_prefix


def webhook_secret_ref(agent_key: str) -> str:
    return WEBHOOK_SECRET_PREFIX + agent_key


def scoped_candidates(prefix: str, agent_key: str, preferred_ref: str | None = None) -> list[str]:
    """Secret lookup order: the profile's own ref, then ``<prefix>.<agent>``, then ``<prefix>``."""
    preferred = (preferred_ref or "").strip()
    refs = [preferred] if preferred else []
    refs += [f"{prefix}.{agent_key}", prefix]
    return list(dict.fromkeys(refs))


def service_key_candidates(agent_key: str, preferred_ref: str | None) -> list[str]:
    return scoped_candidates(BRIDGE_SERVICE_KEY, agent_key, preferred_ref)


def linking_secret_candidates(agent_key: str) -> list[str]:
    return scoped_candidates(BRIDGE_LINKING_SHARED_SECRET, agent_key)
