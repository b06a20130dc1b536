"""Global skills end to end without a server: commands, manifest endpoint, and the worker's
materialiser (hash checks, atomic replacement, removal of skills no longer released)."""

from __future__ import annotations

import io
import json
import sys
import threading

import pytest
from django.core.management import CommandError, call_command

from agents.models import GlobalSkill, GlobalSkillRelease, GlobalSkillVersion
from agents.skill_bundle import bundle_sha256, file_sha256
from agents.skills import LAYOUT_VERSION, build_manifest, publish_skill
from workers.runtime.skills import MARKER, apply_manifest, materialise_skills


def f(path, content):
    return {"path": path, "content": content, "sha256": file_sha256(content)}


GOOD = [f("SKILL.md", "# Demo skill\n"), f("scripts/index.mjs", "export default {};\n")]


def write_skill_dir(root, name="weather", skill_md="# Weather\n", script="scripts/index.mjs"):
    skill = root / name
    (skill / "scripts").mkdir(parents=True)
    (skill / "SKILL.md").write_text(skill_md)
    (skill / script).write_text("export default {};\n")
    return skill


# Commands ----------------------------------------------------------------------------------
def test_skill_bundle_skips_hidden_files_and_the_marker(tmp_path):
    skill = write_skill_dir(tmp_path)
    (skill / ".git").mkdir()
    (skill / ".git" / "HEAD").write_text("ref")
    (skill / MARKER).write_text("{}")
    (skill / "docs").mkdir()
    (skill / "docs" / "usage.md").write_text("use it\n")
    out = io.StringIO()
    call_command("skill_bundle", str(skill), stdout=out)
    files = json.loads(out.getvalue())["files"]
    assert [item["path"] for item in files] == ["SKILL.md", "docs/usage.md", "scripts/index.mjs"]
    assert all(item["sha256"] == file_sha256(item["content"]) for item in files)


def test_skill_bundle_bad_arguments(tmp_path):
    with pytest.raises(CommandError, match="is not a directory"):
        call_command("skill_bundle", str(tmp_path / "missing"))
    skill = write_skill_dir(tmp_path)
    (skill / "logo.png").write_bytes(b"\x89PNG\xff\xfe")
    with pytest.raises(CommandError, match="logo.png is not UTF-8 text"):
        call_command("skill_bundle", str(skill))


def test_publish_skill_takes_version_and_name_from_front_matter(db, tmp_path):
    skill = write_skill_dir(
        tmp_path,
        skill_md="---\nname: Weather\nversion: 2.1.0\ndescription: 'Forecasts'\n---\n# Weather\n",
    )
    out = io.StringIO()
    call_command("publish_skill", str(skill), "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert (data["slug"], data["version"], data["channel"]) == ("weather", "2.1.0", "stable")
    stored = GlobalSkill.objects.get(slug="weather")
    assert (stored.name, stored.description) == ("Weather", "Forecasts")
    # --skill-version wins over the front matter
    call_command("publish_skill", str(skill), "--skill-version", "2.2.0", stdout=io.StringIO())
    assert [s["version"] for s in build_manifest()["skills"]] == ["2.2.0"]


def test_publish_skill_options(db, tmp_path):
    skill = write_skill_dir(tmp_path, script="scripts/index.cjs")
    args = [str(skill), "--skill-version", "1.0.0", "--slug", "forecast", "--module-format", "cjs"]
    out = io.StringIO()
    call_command("publish_skill", *args, "--no-activate", stdout=out)
    assert "Published forecast@1.0.0 (2 files" in out.getvalue()
    assert GlobalSkillVersion.objects.get().module_format == "cjs"
    assert not GlobalSkillRelease.objects.exists()  # stored, not released
    assert build_manifest()["skills"] == []
    call_command("publish_skill", *args, "--channel", "canary", stdout=io.StringIO())
    assert GlobalSkillVersion.objects.count() == 1  # same bundle: same immutable version
    assert [s["slug"] for s in build_manifest("canary")["skills"]] == ["forecast"]


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "No version: pass --skill-version"),
        (["--skill-version", "1.0"], "Invalid skill version"),
        (["--skill-version", "1.0.0", "--slug", "Bad Slug"], "Invalid skill slug"),
        (["--skill-version", "1.0.0", "--module-format", "cjs"], "must include scripts/index.cjs"),
        (["--skill-version", "1.0.0", "--channel", "beta"], "invalid choice: 'beta'"),
    ],
)
def test_publish_skill_bad_arguments_change_nothing(db, tmp_path, args, message):
    skill = write_skill_dir(tmp_path)
    with pytest.raises(CommandError, match=message):
        call_command("publish_skill", str(skill), *args)
    assert not GlobalSkill.objects.exists() and not GlobalSkillVersion.objects.exists()


def test_publish_skill_refuses_a_changed_bundle_under_an_existing_version(db, tmp_path):
    skill = write_skill_dir(tmp_path)
    call_command("publish_skill", str(skill), "--skill-version", "1.0.0", stdout=io.StringIO())
    (skill / "SKILL.md").write_text("# Weather, changed\n")
    with pytest.raises(CommandError, match="already exists with a different bundle"):
        call_command("publish_skill", str(skill), "--skill-version", "1.0.0")
    assert GlobalSkillVersion.objects.get().files[0]["content"] == "# Weather\n"
    with pytest.raises(CommandError, match="is not a directory"):
        call_command("publish_skill", str(tmp_path / "nope"), "--skill-version", "1.0.0")


# Manifest ----------------------------------------------------------------------------------
def test_manifest_endpoint_shape(db, make_worker, worker_api):
    publish_skill("demo", "1.0.0", GOOD, actor="t")
    publish_skill("zeta", "0.1.0", GOOD, actor="t", channel="canary")
    _, token = make_worker("w1")
    api = worker_api(token)
    body = api.get("/api/v1/worker/skills/manifest/", {"channel": "stable"}).json()
    assert body["layout_version"] == LAYOUT_VERSION == "openclaw-workspace-skill-v1"
    assert len(body["manifest_version"]) == 64
    (skill,) = body["skills"]
    assert skill["skill_dir_name"] == "demo" and skill["version"] == "1.0.0"
    assert skill["bundle_sha256"] == bundle_sha256(GOOD)
    assert [item["path"] for item in skill["files"]] == ["SKILL.md", "scripts/index.mjs"]
    assert all(item["sha256"] == file_sha256(item["content"]) for item in skill["files"])
    again = api.get("/api/v1/worker/skills/manifest/").json()
    assert again["manifest_version"] == body["manifest_version"]  # content only, not time
    canary = api.get("/api/v1/worker/skills/manifest/", {"channel": "canary"}).json()
    assert [s["slug"] for s in canary["skills"]] == ["zeta"]
    bad = api.get("/api/v1/worker/skills/manifest/", {"channel": "beta"})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_request"


def test_disabled_skill_leaves_the_manifest(db):
    publish_skill("demo", "1.0.0", GOOD, actor="t")
    GlobalSkill.objects.filter(slug="demo").update(status="disabled")
    assert build_manifest()["skills"] == []


# Materialiser ------------------------------------------------------------------------------
def test_bundle_hash_mismatch_is_rejected_and_the_old_copy_kept(db, tmp_path):
    publish_skill("demo", "1.0.0", GOOD, actor="t")
    manifest = build_manifest()
    skills_dir = tmp_path / "skills"
    apply_manifest(skills_dir, manifest)
    # Every file matches its own hash, but a file was added without the bundle hash knowing.
    forged = json.loads(json.dumps(manifest))
    forged["skills"][0]["files"].append(f("scripts/extra.mjs", "steal();\n"))
    result = apply_manifest(skills_dir, forged)
    assert result["installed"] == [] and "bundle hash mismatch" in result["rejected"][0]
    assert not (skills_dir / "demo" / "scripts" / "extra.mjs").exists()
    assert (skills_dir / "demo" / "SKILL.md").read_text() == "# Demo skill\n"


@pytest.mark.parametrize("bad_path", ["../escape.md", "/etc/passwd"])
def test_unsafe_paths_are_rejected_before_writing(tmp_path, bad_path):
    files = [*GOOD, f(bad_path, "x")]
    skill = {
        "slug": "demo",
        "skill_dir_name": "demo",
        "files": files,
        "bundle_sha256": bundle_sha256(files),
    }
    result = apply_manifest(tmp_path / "skills", {"skills": [skill]})
    assert "unsafe path" in result["rejected"][0]
    assert not (tmp_path / "escape.md").exists() and not (tmp_path / "skills" / "demo").exists()


def test_new_version_replaces_the_whole_directory(db, tmp_path):
    publish_skill("demo", "1.0.0", [*GOOD, f("old.md", "old")], actor="t")
    skills_dir = tmp_path / "skills"
    apply_manifest(skills_dir, build_manifest())
    publish_skill("demo", "1.1.0", [f("SKILL.md", "# v1.1\n"), GOOD[1]], actor="t")
    assert apply_manifest(skills_dir, build_manifest())["installed"] == ["demo"]
    assert (skills_dir / "demo" / "SKILL.md").read_text() == "# v1.1\n"
    assert not (skills_dir / "demo" / "old.md").exists()  # not merged: replaced
    marker = json.loads((skills_dir / "demo" / MARKER).read_text())
    assert marker["version"] == "1.1.0"
    visible = sorted(p.name for p in skills_dir.iterdir() if not p.name.startswith("."))
    assert visible == ["demo"]
    assert len(list(skills_dir.iterdir())) == 2  # the link and one version dir: old one gone


def test_skill_no_longer_released_is_removed_and_others_stay(db, tmp_path):
    publish_skill("demo", "1.0.0", GOOD, actor="t")
    publish_skill("other", "1.0.0", GOOD, actor="t")
    skills_dir = tmp_path / "skills"
    apply_manifest(skills_dir, build_manifest())
    (skills_dir / "hand-made").mkdir()  # not written by the worker: never touched
    GlobalSkillRelease.objects.filter(skill__slug="demo").update(active=False)
    result = apply_manifest(skills_dir, build_manifest())
    assert result["removed"] == ["demo"]
    assert sorted(p.name for p in skills_dir.iterdir() if not p.name.startswith(".")) == [
        "hand-made",
        "other",
    ]
    assert not [p for p in skills_dir.iterdir() if p.name.startswith(".v-demo-")]


def test_worker_materialises_through_the_api_client(db, tmp_path):
    publish_skill("demo", "1.0.0", GOOD, actor="t")

    class Client:
        def skills_manifest(self, channel, workspace_id):
            self.asked = (channel, workspace_id)
            return build_manifest(channel, workspace_id)

    client = Client()
    result = materialise_skills(client, tmp_path / "s", channel="stable", workspace_id="default")
    assert client.asked == ("stable", "default") and result["installed"] == ["demo"]


def test_a_reader_never_sees_a_missing_skill_during_replacement(db, tmp_path):
    publish_skill(
        "demo", "1.0.0", [*GOOD, *(f(f"doc{i}.md", "x" * 500) for i in range(50))], actor="t"
    )
    skills_dir = tmp_path / "skills"
    manifest = build_manifest()
    apply_manifest(skills_dir, manifest)
    missing = []
    done = threading.Event()

    def reader():
        while not done.is_set():
            if not (skills_dir / "demo" / "SKILL.md").exists():
                missing.append(1)

    # Switch threads every microsecond so the reader really runs between the writer's steps
    # (with the default 5 ms the old two-rename swap was never caught missing).
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(20):
            apply_manifest(skills_dir, manifest)
    finally:
        done.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert missing == []  # one rename(2) swaps the link: never absent, never half-written
    assert (skills_dir / "demo").is_symlink()
    assert len([p for p in skills_dir.iterdir() if p.name.startswith(".v-demo-")]) == 1


def test_an_old_plain_directory_is_replaced_by_a_link(db, tmp_path):
    publish_skill("demo", "1.0.0", GOOD, actor="t")
    skills_dir = tmp_path / "skills"
    (skills_dir / "demo").mkdir(parents=True)
    (skills_dir / "demo" / MARKER).write_text("{}")
    (skills_dir / "demo" / "stale.md").write_text("x")
    assert apply_manifest(skills_dir, build_manifest())["installed"] == ["demo"]
    assert (skills_dir / "demo").is_symlink()
    assert not (skills_dir / "demo" / "stale.md").exists()
    assert not (skills_dir / ".old-demo").exists()


def test_an_unknown_layout_changes_nothing(db, tmp_path):
    from workers.runtime.skills import SkillVerificationError

    publish_skill("demo", "1.0.0", GOOD, actor="t")
    skills_dir = tmp_path / "skills"
    apply_manifest(skills_dir, build_manifest())
    with pytest.raises(SkillVerificationError, match="unsupported skills layout"):
        apply_manifest(skills_dir, {"layout_version": "v2", "skills": []})
    assert (skills_dir / "demo" / "SKILL.md").exists()  # not removed
