"""What admin users notice (issue 14 item 6): model names that read well in the plural,
status icons that need no emoji font, and a confirmation page before every consequential
custom action."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.actions import delete_selected
from django.urls import reverse

from agents.models import AuditEvent, GlobalSkillRelease
from agents.skill_bundle import file_sha256
from agents.skills import publish_skill
from telegram.models import Bot

OUR_APPS = {"agents", "workers", "telegram", "fly", "pushing"}
PREPOSITIONS = {"with", "of", "for", "in", "to", "by", "from", "without"}
# Nouns with no plural of their own: "usage", not "usages".
UNCOUNTABLE = {"config", "spend", "usage", "data", "info"}


def our_models():
    return [m for m in apps.get_models() if m._meta.app_label in OUR_APPS]


@pytest.mark.parametrize("model", our_models(), ids=lambda m: m._meta.label)
def test_plural_names_read_well(model):
    singular = str(model._meta.verbose_name)
    plural = str(model._meta.verbose_name_plural)
    words = singular.split()
    if PREPOSITIONS & set(words[1:]):
        # "message with an expired lease" → "messages with an expired lease", not "…leases".
        assert plural != singular + "s", f"{model._meta.label}: {plural!r}"
        head = words.index(next(w for w in words[1:] if w in PREPOSITIONS))
        assert plural.endswith(" ".join(words[head:])), f"{model._meta.label}: {plural!r}"
    if words[-1] in UNCOUNTABLE:
        assert plural == singular, f"{model._meta.label}: {plural!r}"
    assert not plural.endswith(("ys", "ss", "chs", "shs", "xs")) or plural.endswith("ways")


def test_the_expired_lease_list_is_named_in_the_plural_properly():
    from workers.models import ExpiredLease, JobUsage

    assert ExpiredLease._meta.verbose_name_plural == "messages with an expired lease"
    assert JobUsage._meta.verbose_name_plural == "usage records"


EMOJI = re.compile("[\u2600-\u27bf\u2b00-\u2bff\U0001f000-\U0001faff]")


def test_templates_and_admin_code_use_no_emoji_icons():
    """Status marks are images or CSS (Django's icon-yes/icon-no SVGs): an emoji renders
    as an empty box on a server or desktop without an emoji font."""
    roots = [Path(settings.BASE_DIR) / "templates"]
    files = [p for root in roots for p in root.rglob("*.html")]
    files += [
        p for app in OUR_APPS for p in Path(apps.get_app_config(app).path).glob("admin*.py")
    ] + [Path(apps.get_app_config("telegram").path) / "readiness.py"]
    offenders = [str(p) for p in files if EMOJI.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_onboarding_readiness_uses_svg_icons():
    template = (Path(settings.BASE_DIR) / "templates/admin/telegram/onboarding.html").read_text()
    assert "admin/img/icon-yes.svg" in template and "admin/img/icon-no.svg" in template


# Confirmation pages ----------------------------------------------------------------------

# Every custom action, and how it guards a consequential change. A new action fails
# test_every_action_is_classified until it is added here.
CONFIRMED = {
    "activate_stable",  # this file
    "activate_canary",  # this file
    "rotate_secret",  # this file
    "revoke",  # tests/telegram/test_admin_telegram.py
    "soft_reset",  # preview first: tests/telegram (soft reset)
    "requeue",  # tests/workers/test_admin.py
    "drain",  # tests/workers/test_worker_admin.py
    "trigger_now",  # tests/pushing/test_admin.py
    "run_fly_cleanup",  # a link to the dry-run preview page: tests/fly/test_fly_admin.py
    "resubmit",  # django-q2's tasks, this file
    "rotate_webhook_secret",  # tests/consumer_api/test_event_admin.py
}
HARMLESS = {
    "reconcile_identity": "re-reads the bot's own name from Telegram",
    "enable": "turns a push job on again; missed slots are not replayed",
    "disable": "turns a push job off; enable undoes it",
    "retry": "queues failed push rows again",
    "retry_selected": "sends failed outbox rows again (only failed ones: none was delivered)",
    "retry_selected_events": "sends failed event webhooks again (only failed ones)",
}


def registered_actions() -> set[str]:
    names = set()
    for model_admin in admin.site._registry.values():
        for action in model_admin.actions or []:
            if action is delete_selected:
                continue  # Django's own, with its own confirmation page
            names.add(action if isinstance(action, str) else action.__name__)
    return names


def test_every_action_is_classified():
    assert registered_actions() - CONFIRMED - set(HARMLESS) == set()


FILES = [
    {"path": p, "content": c, "sha256": file_sha256(c)}
    for p, c in [("SKILL.md", "# Demo\n"), ("scripts/index.mjs", "export default {};\n")]
]


def test_activating_a_release_asks_first(admin_client, db):
    v1 = publish_skill("demo", "1.0.0", FILES, actor="t")
    v2 = publish_skill("demo", "1.1.0", [*FILES, {**FILES[0], "path": "README.md"}], actor="t")
    url = reverse("admin:agents_globalskillversion_changelist")
    page = admin_client.post(url, {"action": "activate_stable", "_selected_action": [v1.pk]})
    assert page.status_code == 200 and 'name="confirm" value="yes"' in page.content.decode()
    assert "loads these versions" in page.content.decode()
    assert GlobalSkillRelease.objects.get(active=True, channel="stable").version == v2
    admin_client.post(
        url, {"action": "activate_stable", "_selected_action": [v1.pk], "confirm": "yes"}
    )
    assert GlobalSkillRelease.objects.get(active=True, channel="stable").version == v1


def test_rotating_a_webhook_secret_asks_first(admin_client, db, alpha_agent):
    bot = Bot.objects.create(agent=alpha_agent, bot_identity="100", username="alpha_bot")
    url = reverse("admin:telegram_bot_changelist")
    page = admin_client.post(url, {"action": "rotate_secret", "_selected_action": [bot.pk]})
    content = page.content.decode()
    assert page.status_code == 200 and "stays accepted for 10 minutes" in content
    assert 'name="confirm" value="yes"' in content
    assert not AuditEvent.objects.filter(action="telegram.rotate_webhook_secret").exists()


def test_resubmitting_a_task_asks_first(admin_client, db):
    import uuid

    from django.utils import timezone
    from django_q.models import Failure, OrmQ

    now = timezone.now()
    task = Failure.objects.create(
        id=uuid.uuid4().hex, name="t", func="math.floor", started=now, stopped=now, success=False
    )
    url = reverse("admin:django_q_failure_changelist")
    page = admin_client.post(url, {"action": "resubmit", "_selected_action": [task.pk]})
    assert page.status_code == 200 and "runs again" in page.content.decode()
    assert Failure.objects.filter(pk=task.pk).exists() and not OrmQ.objects.exists()
