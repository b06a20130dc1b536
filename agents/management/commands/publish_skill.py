from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from agents.audit import actor_name
from agents.management.base import JsonOutput
from agents.skills import SkillError, bundle_from_directory, publish_skill, skill_front_matter


class Command(JsonOutput, BaseCommand):
    help = (
        "Validate a skill directory and store it as an immutable version (released on the "
        "channel by default). The version, name and description default to SKILL.md's front "
        "matter (version:, name:, description:); the slug to the directory name."
    )
    errors = (SkillError,)

    def add_arguments(self, parser):
        parser.add_argument("directory")
        parser.add_argument(
            "--skill-version",
            dest="skill_version",
            help="Semantic version, e.g. 1.2.0 (default: 'version:' in SKILL.md).",
        )
        parser.add_argument("--slug", help="Default: the directory name.")
        parser.add_argument("--channel", default="stable", choices=["stable", "canary"])
        parser.add_argument("--module-format", default="esm", choices=["esm", "cjs"])
        parser.add_argument("--entry-point", default="default")
        parser.add_argument("--name", default="")
        parser.add_argument("--description", default="")
        parser.add_argument(
            "--no-activate", action="store_true", help="Store the version without releasing it."
        )

    def handle(self, *args, directory, **options):
        path = Path(directory)
        if not path.is_dir():
            raise CommandError(f"{directory} is not a directory.")
        meta = skill_front_matter(path)
        skill_version = options["skill_version"] or meta.get("version")
        if not skill_version:
            raise CommandError(
                "No version: pass --skill-version X.Y.Z or add 'version: X.Y.Z' to the front "
                "matter of SKILL.md."
            )
        version = publish_skill(
            options["slug"] or path.resolve().name,
            skill_version,
            bundle_from_directory(path),
            actor=actor_name(command="publish_skill"),
            module_format=options["module_format"],
            entry_point=options["entry_point"],
            channel=options["channel"],
            name=options["name"] or meta.get("name", ""),
            description=options["description"] or meta.get("description", ""),
            activate=not options["no_activate"],
        )
        data = {
            "slug": version.skill.slug,
            "version": version.version,
            "bundle_sha256": version.bundle_sha256,
            "files": len(version.files),
            "channel": None if options["no_activate"] else options["channel"],
        }
        self.emit(
            options,
            data,
            f"Published {data['slug']}@{data['version']} "
            f"({data['files']} files, sha256 {data['bundle_sha256'][:12]}…).",
        )
