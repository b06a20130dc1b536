"""Materialise the global-skills manifest into the worker's skills directory.

Every file's SHA-256 and the bundle's hash are checked before anything is written; a skill
that fails is skipped and its previous copy kept. ``<skills dir>/<skill_dir_name>`` is a
symlink to a hidden, fully written version directory (``.v-<name>-<random>``); a new version
is written next to it and the link is swapped with one ``rename(2)``, so an agent reading the
skill sees either the old or the new version, complete, and never a missing one. Skills no
longer released are removed (only entries this worker wrote, recognised by their marker
file); version directories no link points to any more are deleted.

Bundle hash (SPEC §13, ``workers.runtime.skill_layout``): SHA-256 over the files sorted by path
(code-point order), each contributing ``path``, NUL, the file's SHA-256 (lowercase hex),
NUL, its content, NUL — all UTF-8.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from pathlib import Path, PurePosixPath

from workers.runtime.archive import DEFAULT_LIMITS, ArchiveLimits, remove_entry
from workers.runtime.skill_layout import LAYOUT_VERSION, MARKER, bundle_sha256, file_sha256

logger = logging.getLogger("agent_factory.worker")


class SkillVerificationError(ValueError):
    pass


def check_manifest_limits(manifest: dict, limits: ArchiveLimits) -> None:
    """The archive limits of SPEC §23, over the whole manifest: files and content bytes."""
    files = [item for skill in manifest.get("skills", []) for item in skill.get("files", [])]
    if len(files) > limits.max_members:
        raise SkillVerificationError(f"the manifest has more than {limits.max_members} files")
    size = sum(len(item.get("content", "").encode()) for item in files)
    if size > limits.max_bytes:
        raise SkillVerificationError(f"the manifest has more than {limits.max_bytes} bytes")


def verify_skill(skill: dict) -> None:
    for item in skill.get("files", []):
        raw = item["path"]
        path = PurePosixPath(raw)
        # Relative, normalised, plain names only: nothing that could leave the skill's
        # directory, shadow its marker or name one entry two ways.
        if (
            not raw
            or path.is_absolute()
            or path.as_posix() != raw
            or any(part in ("..", ".") for part in raw.split("/"))
            or "\\" in raw
            or "\0" in raw
            or len(raw) > 4096
            or path.name == MARKER
        ):
            raise SkillVerificationError(f"{skill['slug']}: unsafe path {raw!r}")
        if file_sha256(item["content"]) != item["sha256"]:
            raise SkillVerificationError(f"{skill['slug']}: {item['path']} does not match its hash")
    if bundle_sha256(skill.get("files", [])) != skill.get("bundle_sha256"):
        raise SkillVerificationError(f"{skill['slug']}: bundle hash mismatch")


def write_skill(skills_dir: Path, skill: dict) -> None:
    name = skill["skill_dir_name"]
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise SkillVerificationError(f"{skill['slug']}: unsafe directory name {name!r}")
    version_dir = skills_dir / f".v-{name}-{secrets.token_hex(4)}"
    try:
        for item in skill["files"]:
            target = version_dir / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(item["content"], encoding="utf-8")
        marker = {
            "slug": skill["slug"],
            "version": skill.get("version"),
            "bundle_sha256": skill["bundle_sha256"],
            "managed_by": "agent-factory",
        }
        (version_dir / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        final = skills_dir / name
        if final.is_dir() and not final.is_symlink():
            # A plain directory (an older layout): move it aside once; from now on a link.
            shutil.rmtree(final.with_name(f".old-{name}"), ignore_errors=True)
            final.rename(final.with_name(f".old-{name}"))
        link = skills_dir / f".link-{name}-{secrets.token_hex(4)}"
        link.symlink_to(version_dir.name)  # relative: the skills dir can move as a whole
        os.replace(link, final)  # atomic: readers see the old version or the new one
    except BaseException:
        shutil.rmtree(version_dir, ignore_errors=True)
        raise


def _collect_garbage(skills_dir: Path) -> None:
    """Delete hidden entries no link points to: superseded versions, leftovers of a crash."""
    in_use = {child.readlink().name for child in skills_dir.iterdir() if child.is_symlink()}
    for child in skills_dir.iterdir():
        if not child.name.startswith((".v-", ".old-", ".link-", ".staging-")):
            continue
        if child.name in in_use:
            continue
        if child.is_symlink() or not child.is_dir():
            child.unlink()
        else:
            shutil.rmtree(child, ignore_errors=True)


def apply_manifest(
    skills_dir: Path, manifest: dict, limits: ArchiveLimits = DEFAULT_LIMITS
) -> dict:
    layout = manifest.get("layout_version", LAYOUT_VERSION)
    if layout != LAYOUT_VERSION:
        # A layout this worker does not know: change nothing rather than guess.
        raise SkillVerificationError(f"unsupported skills layout {layout!r}")
    check_manifest_limits(manifest, limits)  # past them: change nothing
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
    for child in sorted(skills_dir.iterdir()):
        if child.name.startswith(".") or child.name in wanted:
            continue
        if child.is_dir() and (child / MARKER).exists():  # ours (a link or an old plain dir)
            remove_entry(child)
            removed.append(child.name)
    _collect_garbage(skills_dir)
    return {"installed": installed, "rejected": rejected, "removed": removed}


def materialise_skills(
    client,
    skills_dir: Path,
    *,
    channel: str,
    workspace_id: str,
    limits: ArchiveLimits = DEFAULT_LIMITS,
) -> dict:
    manifest = client.skills_manifest(channel, workspace_id)
    return apply_manifest(skills_dir, manifest, limits)
