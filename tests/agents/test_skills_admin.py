"""Global skills in the admin: publish a version from bundle JSON, activate releases."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from agents.models import AuditEvent, GlobalSkill, GlobalSkillRelease, GlobalSkillVersion
from agents.skill_bundle import file_sha256
from agents.skills import build_manifest, publish_skill


def f(path, content):
    return {"path": path, "content": content, "sha256": file_sha256(content)}


GOOD = [f("SKILL.md", "# Demo skill\n"), f("scripts/index.mjs", "export default {};\n")]


@pytest.fixture
def staff(client, db):
    user = get_user_model().objects.create_superuser("boss", "b@example.com", "pw")
    client.force_login(user)
    return client


def publish_form(slug="demo", version="1.0.0", channel="stable", files=GOOD, raw=None):
    return {
        "slug": slug,
        "version": version,
        "channel": channel,
        "module_format": "esm",
        "bundle_json": raw if raw is not None else json.dumps({"files": files}),
    }


def test_publish_page_stores_a_version_and_releases_it(staff):
    url = reverse("admin:agents_globalskillversion_add")
    assert staff.get(url).status_code == 200
    response = staff.post(url, publish_form())
    assert response.status_code == 302
    version = GlobalSkillVersion.objects.get()
    assert (version.skill.slug, version.version, version.created_by) == ("demo", "1.0.0", "boss")
    assert [s["slug"] for s in build_manifest("stable")["skills"]] == ["demo"]
    assert AuditEvent.objects.filter(action="skill.publish", actor="boss").exists()


@pytest.mark.parametrize(
    "form, message",
    [
        (publish_form(raw="{not json"), "Expecting property name"),
        (publish_form(raw="[1, 2]"), "has no attribute"),
        (publish_form(files=[GOOD[1]]), "must include SKILL.md"),
        (publish_form(version="v1"), "semantic versioning"),
        (publish_form(files=[{**GOOD[0], "sha256": "0" * 64}, GOOD[1]]), "checksum mismatch"),
    ],
)
def test_publish_page_shows_the_error_and_changes_nothing(staff, form, message):
    response = staff.post(reverse("admin:agents_globalskillversion_add"), form)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not GlobalSkill.objects.exists() and not GlobalSkillVersion.objects.exists()


def test_activate_actions_keep_one_active_release_per_skill_and_channel(staff):
    v1 = publish_skill("demo", "1.0.0", GOOD, actor="t")
    v2 = publish_skill("demo", "1.1.0", [*GOOD, f("README.md", "x")], actor="t")
    assert [s["version"] for s in build_manifest("stable")["skills"]] == ["1.1.0"]
    changelist = reverse("admin:agents_globalskillversion_changelist")
    response = staff.post(
        changelist,
        {"action": "activate_stable", "_selected_action": [v1.pk], "confirm": "yes"},
        follow=True,
    )
    assert "1 release(s) activated on stable" in response.content.decode()
    assert [s["version"] for s in build_manifest("stable")["skills"]] == ["1.0.0"]  # rollback
    staff.post(
        changelist, {"action": "activate_canary", "_selected_action": [v2.pk], "confirm": "yes"}
    )
    assert [s["version"] for s in build_manifest("canary")["skills"]] == ["1.1.0"]
    active = GlobalSkillRelease.objects.filter(active=True)
    assert sorted((r.channel, r.version.version) for r in active) == [
        ("canary", "1.1.0"),
        ("stable", "1.0.0"),
    ]
    assert GlobalSkillRelease.objects.get(active=True, channel="stable").activated_by == "boss"


def test_versions_are_read_only_in_the_admin(staff):
    version = publish_skill("demo", "1.0.0", GOOD, actor="t")
    url = reverse("admin:agents_globalskillversion_change", args=[version.pk])
    assert staff.get(url).status_code == 200
    staff.post(url, {"version": "9.9.9", "files": "[]"})
    version.refresh_from_db()
    assert (version.version, version.files) == ("1.0.0", GOOD)


def test_disabling_a_skill_in_the_admin_removes_it_from_the_manifest(staff):
    publish_skill("demo", "1.0.0", GOOD, actor="t")
    skill = GlobalSkill.objects.get()
    url = reverse("admin:agents_globalskill_change", args=[skill.pk])
    response = staff.post(
        url,
        {
            "slug": "demo",
            "name": "Demo",
            "description": "",
            "status": "disabled",
            "created_at_0": "2026-01-01",
            "created_at_1": "00:00:00",
            "versions-TOTAL_FORMS": "1",
            "versions-INITIAL_FORMS": "1",
            "versions-MIN_NUM_FORMS": "0",
            "versions-MAX_NUM_FORMS": "1000",
            "versions-0-id": str(skill.versions.get().pk),
            "versions-0-skill": str(skill.pk),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert build_manifest("stable")["skills"] == []
