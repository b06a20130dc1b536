"""Every field of the consumer API documented with a description and an example.

A drf-spectacular postprocessing hook fills, in every component the /api/v1/ operations use
(the worker API is left alone), the description a serializer did not give and an example
for every scalar field, from one glossary by field name — the same name means the same
thing everywhere in this API. tests/consumer_api/test_schema_docs.py fails when a field has
neither, so a new field cannot go undocumented.
"""

from __future__ import annotations

T = "2026-01-05T08:30:00Z"

# name: (description, example)
GLOSSARY: dict[str, tuple[str, object]] = {
    "active_binding": ("The user's active binding in scope, or null.", None),
    "active_push_jobs": ("Push jobs enabled.", 1),
    "agent_key": ("An agent's key (unique slug).", "support-bot"),
    "agent_keys": ("Agents' keys.", ["support-bot"]),
    "at": ("When the entry was written (UTC).", T),
    "attempts": ("Delivery attempts so far.", 1),
    "binding_status": ("active, revoked, or null.", "active"),
    "bot_identity": ("The Telegram bot's numeric id, as a string.", "7012345678"),
    "bot_username": ("The Telegram bot's username.", "support_bot"),
    "bound_at": ("When the binding was made (UTC).", T),
    "broadcast_id": ("The broadcast's id.", 12),
    "claimed_at": ("When a worker claimed it (UTC), or null.", T),
    "code": ("The pairing code (the user sends /start <code>).", "K7QX2M9TPA"),
    "completed_at": ("When it finished (UTC), or null.", T),
    "consumer_user": ("The host product's user id (per tenant).", "user-42"),
    "consumer_user_id": ("The host product's user id (per tenant).", "user-42"),
    "content": ("The entry's text.", "Hello!"),
    "context_messages": ("History entries.", 4),
    "conversation_id": ("The conversation's id.", "user-agent:support-bot:user-42"),
    "cost_usd": ("Estimated cost in USD, a decimal string.", "0.001250"),
    "counts": ("Targets per status.", {"pending": 0, "enqueued": 2, "failed": 0}),
    "created_at": ("When it was created (UTC).", T),
    "dead_lettered_at": ("When it was dead-lettered (UTC), or null.", None),
    "deep_link": ("https://t.me/<bot>?start=<code>", "https://t.me/support_bot?start=K7QX2M9TPA"),
    "delivered_at": ("When the reply reached Telegram (UTC), or null.", T),
    "detail": ("A human sentence.", "Agent 'x' not found."),
    "done_messages": ("Queue items done.", 10),
    "enabled": ("On or off.", True),
    "enqueued": ("Runs enqueued.", 3),
    "error": ("Why it failed, or empty.", ""),
    "expires_at": ("When it expires (UTC).", T),
    "failed": ("Runs that failed.", 0),
    "failed_attempts": ("Attempts that failed.", 0),
    "failed_messages": ("Queue items failed or dead-lettered.", 0),
    "fields": ("Per-field messages of a validation error.", {"text": ["Required."]}),
    "format_version": ("The snapshot archive's format version.", 1),
    "id": ("The row's id.", 7),
    "input_tokens": ("Prompt tokens.", 1200),
    "items": ("Each readiness check by name.", None),
    "key": ("A push template's key (unique within the tenant).", "morning-digest"),
    "last_error": ("The last failure's reason, or empty.", ""),
    "last_message": ("The user's latest queue item, or null.", None),
    "last_run_at": ("The last run (UTC), or null.", T),
    "latest_dispatch_at": ("The latest push run (UTC), or null.", T),
    "max_attempts": ("Attempts before dead-lettering.", 5),
    "message_id": ("The queue item's id.", 314),
    "month": ("YYYY-MM (UTC).", "2026-01"),
    "next": ("The next page's URL, or null on the last page.", None),
    "next_action": ("The first failing step, or 'ready'.", "ready"),
    "next_run_at": ("The next scheduled run (UTC), or null.", T),
    "ok": ("Whether the check passes.", True),
    "output_tokens": ("Completion tokens.", 300),
    "pairing": ("The user's latest pairing code, or null.", None),
    "pending": ("Runs waiting for the next drain.", 0),
    "period": ("YYYY-MM (UTC).", "2026-01"),
    "periodicity": ("manual, daily, weekly or monthly.", "daily"),
    "priority": ("0-100; higher first.", 50),
    "qr_svg": ("The deep link as an SVG QR code.", "<svg …>"),
    "queued_messages": ("Queue items queued or processing.", 1),
    "ready": ("Whether every check passes.", True),
    "reason": ("Why (a sentence), or the snapshot's reason.", "Webhook is set."),
    "requested_at": ("When it was sent (UTC).", T),
    "require_telegram_binding": ("Only paired users reach the agent.", False),
    "results": ("This page's rows.", None),
    "retry_after": ("Seconds to wait, on 429.", 30),
    "revoked_at": ("When it was revoked (UTC), or null.", None),
    "role": ("system, user, assistant or tool.", "user"),
    "run_key": ("The run's key (unique per job).", "manual:2026-01-05T08:30Z"),
    "schedule": ("The slot.", {"time": "08:30"}),
    "scheduled_for": ("Not before this time (UTC).", T),
    "sha256": ("The archive's SHA-256 (hex).", "9f86d081884c7d65…"),
    "size_bytes": ("The archive's size.", 20480),
    "skipped": ("Runs not sent: the agent's budget was spent.", 0),
    "slug": ("A message template's slug (unique within the tenant).", "welcome"),
    "source": ("manual, telegram_pairing or api.", "api"),
    "status": ("The state.", "active"),
    "suggested_times": ("Suggested slots.", [{"time": "08:30"}]),
    "tags": ("Tags (lowercase, sorted).", ["onboarding"]),
    "target": ("user: one consumer user; agent_users: every bound user of the agent.", "user"),
    "targets": ("Targets.", 2),
    "telegram_chat_id": ("A Telegram chat id.", "123456789"),
    "telegram_user_id": ("A Telegram user id.", "123456789"),
    "template": ("A message template's slug.", "welcome"),
    "template_key": ("A push template's key.", "morning-digest"),
    "tenant": ("The agent's tenant.", "default"),
    "text": ("The text.", "Good morning! Anything new today?"),
    "timezone": ("IANA time zone.", "Europe/Rome"),
    "title": ("A short title.", "Morning digest"),
    "total_dispatches": ("Push runs.", 3),
    "total_push_jobs": ("Push jobs (all states).", 2),
    "total_targets": ("Bound users reached.", 2),
    "ttl_minutes": ("Minutes the code stays valid (default 15).", 15),
    "updated_at": ("When it last changed (UTC).", T),
    "usage_count": ("Sends of this template.", 3),
    "usage_this_month": ("Tokens and estimated cost this month.", None),
    "used_at": ("When the code was used (UTC), or null.", None),
    "variables": ("Template variables.", {"name": "Ada"}),
    "worker_id": ("The worker that made it.", "worker-1"),
}

# Examples that differ from the glossary's in one component (same name, other shape).
OVERRIDES: dict[tuple[str, str], object] = {
    ("MessageTemplate", "variables"): ["name"],
    ("Snapshot", "status"): "ready",
    ("Snapshot", "reason"): "drain",
    ("QueueItem", "status"): "done",
    ("Pairing", "status"): "pending",
    ("PushDispatch", "status"): "enqueued",
    ("BroadcastTarget", "status"): "enqueued",
    ("BroadcastCreated", "targets"): 2,
    ("Binding", "status"): "active",
}


def _refs(node, found: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.add(value.rsplit("/", 1)[-1])
            else:
                _refs(value, found)
    elif isinstance(node, list):
        for item in node:
            _refs(item, found)


def consumer_components(schema: dict) -> list[str]:
    """Names of the components the consumer API's operations reach."""
    found: set[str] = set()
    paths = {
        path: item
        for path, item in schema.get("paths", {}).items()
        if path.startswith("/api/v1/") and not path.startswith("/api/v1/worker/")
    }
    _refs(paths, found)
    components = schema.get("components", {}).get("schemas", {})
    todo = list(found)
    while todo:
        nested: set[str] = set()
        _refs(components.get(todo.pop(), {}), nested)
        todo.extend(nested - found)
        found |= nested
    return sorted(name for name in found if name in components)


def is_scalar(prop: dict) -> bool:
    """Objects, references and lists of references are documented by their own parts."""
    if "$ref" in prop or "allOf" in prop or "oneOf" in prop:
        return False
    for part in (prop.get("items"), prop.get("additionalProperties")):
        if isinstance(part, dict) and ("$ref" in part or "allOf" in part):
            return False
    return True


PARAMETERS: dict[str, tuple[str, object]] = {
    "active": ("true: only active bindings; false: only the others.", True),
    "cursor": ("The position from a previous answer's `next` URL.", None),
    "page_size": ("Rows per page (1-200, default 50).", 50),
    "ordering": ("A field to order by; '-' first for descending.", "-id"),
    "tag": ("Only templates with this tag.", "onboarding"),
}


def document_parameters(result) -> None:
    for path, item in result.get("paths", {}).items():
        if not path.startswith("/api/v1/") or path.startswith("/api/v1/worker/"):
            continue
        for operation in item.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                name = parameter["name"]
                description, example = PARAMETERS.get(name) or GLOSSARY.get(name, (None, None))
                if description and not parameter.get("description"):
                    parameter["description"] = description
                enum = parameter.get("schema", {}).get("enum")
                if enum and example not in enum:
                    example = enum[0]
                if example is not None and "example" not in parameter:
                    parameter["example"] = example


def document_consumer_fields(result, generator, request, public):
    document_parameters(result)
    components = result.get("components", {}).get("schemas", {})
    for name in consumer_components(result):
        for field, prop in components[name].get("properties", {}).items():
            description, example = GLOSSARY.get(field, (None, None))
            if description and "description" not in prop and is_scalar(prop):
                prop["description"] = description
            if not is_scalar(prop) and description and "description" not in prop:
                if "$ref" in prop:  # a $ref's siblings are ignored: wrap it
                    ref = prop.pop("$ref")
                    prop["allOf"] = [{"$ref": ref}]
                prop["description"] = description
            example = OVERRIDES.get((name, field), example)
            if is_scalar(prop) and "example" not in prop and example is not None:
                prop["example"] = example
            if is_scalar(prop) and "example" not in prop and prop.get("nullable"):
                prop["example"] = None
    return result
