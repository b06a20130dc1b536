"""Global skills: bundle validation, publishing, releases and the worker manifest (SPEC §13)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path, PurePosixPath

from django.db import transaction
from django.utils import timezone

from agents.audit import record_audit
from agents.models import GlobalSkill, GlobalSkillRelease, GlobalSkillVersion
from agents.skill_bundle import LAYOUT_VERSION, MARKER, bundle_sha256, file_sha256

MAX_BUNDLE_BYTES = 200_000
MAX_FILES = 200
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{1,127}$")
VERSION = re.compile(r"^\d+\.\d+\.\d+(?:[-+][A-Za-z0-9.-]+)?$")
ENTRY_SCRIPTS = {"esm": "scripts/index.mjs", "cjs": "scripts/index.cjs"}
CHANNELS = tuple(value for value, _ in GlobalSkillRelease.CHANNEL_CHOICES)


class SkillError(ValueError):
    pass


def check_channel(channel: str) -> None:
    if channel not in CHANNELS:
        raise SkillError("channel must be 'stable' or 'canary'.")


def normalise_path(raw: str) -> str:
    path = (raw or "").replace("\\", "/")
    pure = PurePosixPath(path)
    if (
        not path
        or path.startswith("/")
        or pure.is_absolute()
        or ".." in pure.parts
        or "." in pure.parts
        or "" in path.split("/")
    ):
        raise SkillError(f"invalid_relative_path:{raw}")
    return str(pure)


def validate_bundle(files: list, module_format: str) -> list[dict]:
    """The bundle's files, normalised and verified, sorted by path (code-point order)."""
    if module_format not in ENTRY_SCRIPTS:
        raise SkillError("module_format must be 'esm' or 'cjs'.")
    if not isinstance(files, list) or not files:
        raise SkillError("Global skill bundle must contain at least one file.")
    if len(files) > MAX_FILES:
        raise SkillError(f"Global skill bundle has more than {MAX_FILES} files.")
    seen: dict[str, dict] = {}
    total = 0
    for item in files:
        if not isinstance(item, dict) or not isinstance(item.get("content"), str):
            raise SkillError("Each bundle file needs a path, a text content and a sha256.")
        path = normalise_path(item.get("path", ""))
        if path == MARKER:
            raise SkillError(f"Bundle files must not include {MARKER}.")
        if path in seen:
            raise SkillError(f"Duplicate bundle file path: {path}")
        total += len(item["content"].encode())
        if total > MAX_BUNDLE_BYTES:
            raise SkillError("Global skill bundle too large (max 200KB).")
        given = str(item.get("sha256") or "").strip()
        if not given:
            raise SkillError(f"Missing bundle checksum for {path}.")
        if given != file_sha256(item["content"]):
            raise SkillError(f"Global skill checksum mismatch for {path}.")
        seen[path] = {"path": path, "content": item["content"], "sha256": given}
    if "SKILL.md" not in seen:
        raise SkillError("Global skill bundle must include SKILL.md.")
    if ENTRY_SCRIPTS[module_format] not in seen:
        raise SkillError(f"Global skill bundle must include {ENTRY_SCRIPTS[module_format]}.")
    return [seen[path] for path in sorted(seen)]


def bundle_from_directory(directory: Path) -> list[dict]:
    """Every non-hidden text file under ``directory`` (skipping the marker), with hashes."""
    if not directory.is_dir():
        raise SkillError(f"{directory} is not a directory.")
    files = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        try:
            content = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise SkillError(f"{relative} is not UTF-8 text.")
        files.append(
            {"path": relative.as_posix(), "content": content, "sha256": file_sha256(content)}
        )
    return files


def skill_front_matter(directory: Path) -> dict[str, str]:
    """The ``key: value`` lines of SKILL.md's front matter (between leading ``---`` lines),
    so ``publish_skill DIR`` can take the version, name and description from the skill itself.
    Only flat string values are read; anything else in the front matter is left alone."""
    skill_md = directory / "SKILL.md"
    if not skill_md.is_file():
        return {}
    lines = skill_md.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    values: dict[str, str] = {}
    for line in lines[1:]:
        if line.strip() == "---":
            return values
        key, sep, value = line.partition(":")
        if sep and key.strip() and not key.startswith((" ", "\t")):
            values[key.strip()] = value.strip().strip("'\"")
    return {}  # no closing line: not front matter


def publish_skill(
    slug: str,
    version: str,
    files: list,
    *,
    actor: str,
    module_format: str = "esm",
    entry_point: str = "default",
    channel: str = "stable",
    name: str = "",
    description: str = "",
    activate: bool = True,
) -> GlobalSkillVersion:
    normalised = validate_bundle(files, module_format)
    slug, version = slug.strip().lower(), version.strip()
    if not SLUG.match(slug):
        raise SkillError("Invalid skill slug. Use lowercase letters, numbers, '-' and '_'.")
    if not VERSION.match(version):
        raise SkillError("Invalid skill version. Use semantic versioning format.")
    check_channel(channel)
    if not entry_point.strip():
        raise SkillError("entryPoint is required.")
    digest = bundle_sha256(normalised)
    with transaction.atomic():
        skill, _ = GlobalSkill.objects.get_or_create(slug=slug, defaults={"name": name or slug})
        GlobalSkill.objects.filter(pk=skill.pk).update(
            status="active", name=name or skill.name, description=description or skill.description
        )
        existing = GlobalSkillVersion.objects.filter(skill=skill, version=version).first()
        if existing is not None:
            if (existing.bundle_sha256, existing.module_format, existing.entry_point) != (
                digest,
                module_format,
                entry_point,
            ):
                raise SkillError(f"Skill {slug}@{version} already exists with a different bundle.")
            skill_version = existing
        else:
            skill_version = GlobalSkillVersion.objects.create(
                skill=skill,
                version=version,
                module_format=module_format,
                entry_point=entry_point,
                files=normalised,
                bundle_sha256=digest,
                created_by=actor,
            )
        record_audit(
            actor, "skill.publish", skill_version, slug=slug, version=version, bundle_sha256=digest
        )
        if activate:
            activate_release(skill_version, channel=channel, actor=actor)
    return skill_version


def activate_release(skill_version: GlobalSkillVersion, *, channel: str, actor: str):
    """Make ``skill_version`` the one active release of its skill on ``channel``."""
    check_channel(channel)
    with transaction.atomic():
        # Serialise activations of one skill: two at once would both deactivate, then both
        # insert, and the second would break the one-active-release constraint.
        GlobalSkill.objects.select_for_update().filter(pk=skill_version.skill_id).first()
        GlobalSkillRelease.objects.filter(
            skill=skill_version.skill, channel=channel, active=True
        ).update(active=False)
        release = GlobalSkillRelease.objects.create(
            skill=skill_version.skill,
            version=skill_version,
            channel=channel,
            active=True,
            activated_by=actor,
            activated_at=timezone.now(),
        )
        record_audit(actor, "skill.activate", release, version=str(skill_version), channel=channel)
    return release


def skill_dir_name(slug: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "-", slug.strip().lower()) or "unnamed-skill"


def build_manifest(channel: str = "stable", workspace_id: str = "default") -> dict:
    releases = (
        GlobalSkillRelease.objects.filter(channel=channel, active=True, skill__status="active")
        .select_related("skill", "version")
        .order_by("skill__slug")
    )
    skills = []
    for release in releases:
        version = release.version
        files = list(version.files)
        if bundle_sha256(files) != version.bundle_sha256:
            raise SkillError(f"Global skill bundle checksum mismatch for {version}.")
        skills.append(
            {
                "slug": release.skill.slug,
                "version": version.version,
                "module_format": version.module_format,
                "entry_point": version.entry_point,
                "bundle_sha256": version.bundle_sha256,
                "skill_dir_name": skill_dir_name(release.skill.slug),
                "files": files,
            }
        )
    seed = "|".join(f"{s['slug']}@{s['version']}:{s['bundle_sha256']}" for s in skills) or "empty"
    return {
        "layout_version": LAYOUT_VERSION,
        "manifest_version": hashlib.sha256(seed.encode()).hexdigest(),
        "generated_at": timezone.now().isoformat(),
        "release_channel": channel,
        "workspace_id": workspace_id,
        "skills": skills,
    }


def bundle_json(directory: Path) -> str:
    return json.dumps({"files": bundle_from_directory(directory)}, indent=2)
