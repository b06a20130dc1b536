"""Materialise the global-skills manifest into the worker's skills directory.

Every file's SHA-256 and the bundle's hash are checked before anything is written; a skill
that fails is skipped and its previous copy kept. Each skill directory is replaced with a
rename, so an agent never sees a half-written skill. Skills no longer released are removed
(only directories this worker wrote, recognised by their marker file).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path, PurePosixPath

from agents.skill_bundle import bundle_sha256, file_sha256

logger = logging.getLogger("agent_factory.worker")

MARKER = ".af-global-skill.json"


class SkillVerificationError(ValueError):
    pass


def verify_skill(skill: dict) -> None:
    for item in skill.get("files", []):
        path = PurePosixPath(item["path"])
        if path.is_absolute() or ".." in path.parts:
            raise SkillVerificationError(f"{skill['slug']}: unsafe path {item['path']!r}")
        if file_sha256(item["content"]) != item["sha256"]:
            raise SkillVerificationError(f"{skill['slug']}: {item['path']} does not match its hash")
    if bundle_sha256(skill.get("files", [])) != skill.get("bundle_sha256"):
        raise SkillVerificationError(f"{skill['slug']}: bundle hash mismatch")


def write_skill(skills_dir: Path, skill: dict) -> None:
    name = skill["skill_dir_name"]
    if "/" in name or name.startswith("."):
        raise SkillVerificationError(f"{skill['slug']}: unsafe directory name {name!r}")
    staging = skills_dir / f".staging-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    for item in skill["files"]:
        target = staging / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(item["content"], encoding="utf-8")
    marker = {
        "slug": skill["slug"],
        "version": skill.get("version"),
        "bundle_sha256": skill["bundle_sha256"],
    }
    (staging / MARKER).write_text(json.dumps(marker))
    final = skills_dir / name
    old = skills_dir / f".old-{name}"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def apply_manifest(skills_dir: Path, manifest: dict) -> dict:
    skills_dir.mkdir(parents=True, exist_ok=True)
    installed, rejected = [], []
    wanted = set()
    for skill in manifest.get("skills", []):
        wanted.add(skill["skill_dir_name"])
        try:
            verify_skill(skill)
            write_skill(skills_dir, skill)
            installed.append(skill["slug"])
        except (SkillVerificationError, KeyError, OSError) as exc:
            logger.error("Skill rejected, previous copy kept: %s", exc)
            rejected.append(str(exc))
    removed = []
    for child in skills_dir.iterdir():
        if child.is_dir() and child.name not in wanted and (child / MARKER).exists():
            shutil.rmtree(child)
            removed.append(child.name)
    return {"installed": installed, "rejected": rejected, "removed": removed}


def materialise_skills(client, skills_dir: Path, *, channel: str, workspace_id: str) -> dict:
    manifest = client.skills_manifest(channel, workspace_id)
    return apply_manifest(skills_dir, manifest)
