"""Global skills: bundle rules, immutable versions, releases, manifest, worker materialiser."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from agents.models import GlobalSkillRelease, GlobalSkillVersion
from agents.skill_bundle import bundle_sha256, file_sha256
from agents.skills import SkillError, build_manifest, publish_skill, validate_bundle
from workers.runtime.skills import MARKER, apply_manifest


def f(path, content):
    return {"path": path, "content": content, "sha256": file_sha256(content)}


GOOD = [f("SKILL.md", "# Demo skill\n"), f("scripts/index.mjs", "export default {};\n")]


def test_bundle_hash_is_the_documented_construction():
    import hashlib

    expected = hashlib.sha256()
    for item in sorted(GOOD, key=lambda x: x["path"]):
        expected.update(f"{item['path']}\0{item['sha256']}\0{item['content']}\0".encode())
    assert bundle_sha256(GOOD) == expected.hexdigest()


@pytest.mark.parametrize(
    "files, message",
    [
        ([], "at least one file"),
        ([f("../x", "a"), *GOOD], "invalid_relative_path"),
        ([f("/abs", "a"), *GOOD], "invalid_relative_path"),
        ([f(".af-global-skill.json", "{}"), *GOOD], "must not include"),
        ([*GOOD, f("SKILL.md", "again")], "Duplicate"),
        ([f("scripts/index.mjs", "x")], "must include SKILL.md"),
        ([f("SKILL.md", "x")], "scripts/index.mjs"),
        ([{"path": "SKILL.md", "content": "x", "sha256": "0" * 64}], "checksum mismatch"),
        ([*GOOD, f("big.txt", "x" * 200_001)], "too large"),
    ],
)
def test_bundle_rules(files, message):
    with pytest.raises(SkillError, match=message):
        validate_bundle(files, "esm")


def test_versions_are_immutable_and_releases_per_channel(db):
    v1 = publish_skill("demo", "1.0.0", GOOD, actor="t")
    assert publish_skill("demo", "1.0.0", GOOD, actor="t").pk == v1.pk  # idempotent
    with pytest.raises(SkillError, match="already exists with a different bundle"):
        publish_skill("demo", "1.0.0", [*GOOD, f("extra.md", "x")], actor="t")
    v2 = publish_skill("demo", "1.1.0", [*GOOD, f("extra.md", "x")], actor="t", channel="canary")
    stable = build_manifest("stable")
    canary = build_manifest("canary")
    assert [s["version"] for s in stable["skills"]] == ["1.0.0"]
    assert [s["version"] for s in canary["skills"]] == ["1.1.0"]
    assert stable["layout_version"] == "openclaw-workspace-skill-v1"
    assert stable["manifest_version"] != canary["manifest_version"]
    assert GlobalSkillRelease.objects.filter(active=True).count() == 2
    assert GlobalSkillVersion.objects.get(pk=v2.pk).bundle_sha256 == bundle_sha256(v2.files)


def test_bad_slug_and_version(db):
    with pytest.raises(SkillError, match="Invalid skill slug"):
        publish_skill("Bad Slug", "1.0.0", GOOD, actor="t")
    with pytest.raises(SkillError, match="semantic versioning"):
        publish_skill("demo", "v1", GOOD, actor="t")
    assert GlobalSkillVersion.objects.count() == 0


def test_commands_bundle_and_publish(db, tmp_path):
    skill = tmp_path / "weather"
    (skill / "scripts").mkdir(parents=True)
    (skill / "SKILL.md").write_text("# Weather\n")
    (skill / "scripts" / "index.mjs").write_text("export default {};\n")
    (skill / ".hidden").write_text("skip me")
    out = io.StringIO()
    call_command("skill_bundle", str(skill), stdout=out)
    paths = [item["path"] for item in json.loads(out.getvalue())["files"]]
    assert paths == ["SKILL.md", "scripts/index.mjs"]
    out = io.StringIO()
    call_command("publish_skill", str(skill), "--skill-version", "0.1.0", "--json", stdout=out)
    assert json.loads(out.getvalue())["slug"] == "weather"
    (skill / "SKILL.md").unlink()
    with pytest.raises(CommandError, match="must include SKILL.md"):
        call_command("publish_skill", str(skill), "--skill-version", "0.2.0")


def test_manifest_endpoint(db, make_worker, worker_api):
    publish_skill("demo", "1.0.0", GOOD, actor="t")
    _, token = make_worker("w1")
    body = worker_api(token).get("/api/v1/worker/skills/manifest/", {"channel": "stable"}).json()
    assert body["skills"][0]["skill_dir_name"] == "demo"
    assert worker_api(None).get("/api/v1/worker/skills/manifest/").status_code == 401


def test_materialiser_rejects_tampered_file_and_keeps_old(db, tmp_path):
    publish_skill("demo", "1.0.0", GOOD, actor="t")
    skills_dir = tmp_path / "skills"
    manifest = build_manifest()
    result = apply_manifest(skills_dir, manifest)
    assert result["installed"] == ["demo"]
    assert (skills_dir / "demo" / "SKILL.md").read_text() == "# Demo skill\n"
    assert (skills_dir / "demo" / MARKER).exists()
    tampered = json.loads(json.dumps(manifest))
    tampered["skills"][0]["files"][0]["content"] = "# Evil\n"
    result = apply_manifest(skills_dir, tampered)
    assert result["installed"] == [] and "does not match its hash" in result["rejected"][0]
    assert (skills_dir / "demo" / "SKILL.md").read_text() == "# Demo skill\n"  # old kept
    result = apply_manifest(skills_dir, {"skills": []})
    assert result["removed"] == ["demo"] and not (skills_dir / "demo").exists()
    (skills_dir / "mine").mkdir()
    apply_manifest(skills_dir, {"skills": []})
    assert Path(skills_dir / "mine").exists()  # not ours: never removed
