"""Secret names are spelled once, in agents/secret_refs.py (ARCHITECTURE.md), and keep the
names operators import secrets under (SPEC §4, reference queue.md §5.2)."""

from __future__ import annotations

import re
from pathlib import Path

from agents import secret_refs as refs

ROOT = Path(__file__).resolve().parents[2]
APPS = ["agents", "workers", "telegram", "fly", "config"]
# A quoted secret name: "telegram.botToken…", "agent-bridge.…", "fly.apiToken".
SPELLED = re.compile(r"[\"'](telegram\.(botToken|webhookSecret)|agent-bridge\.|fly\.apiToken)")


def test_the_names_operators_import_secrets_under():
    assert refs.bot_token_ref("alpha") == "telegram.botToken.alpha"
    assert refs.webhook_secret_ref("alpha") == "telegram.webhookSecret.alpha"
    assert refs.FLY_API_TOKEN == "fly.apiToken"
    assert refs.service_key_candidates("alpha", " own.ref ") == [
        "own.ref",
        "agent-bridge.serviceKey.alpha",
        "agent-bridge.serviceKey",
    ]
    assert refs.service_key_candidates("alpha", None) == [
        "agent-bridge.serviceKey.alpha",
        "agent-bridge.serviceKey",
    ]
    assert refs.linking_secret_candidates("alpha") == [
        "agent-bridge.linkingSharedSecret.alpha",
        "agent-bridge.linkingSharedSecret",
    ]


def test_no_other_module_spells_a_secret_name():
    spelled = []
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if path.name == "secret_refs.py" or "migrations" in path.parts:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if SPELLED.search(line):
                    spelled.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert spelled == []
