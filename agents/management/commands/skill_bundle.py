from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from agents.skills import SkillError, bundle_json


class Command(BaseCommand):
    help = "Print the bundle JSON of a skill directory (skips hidden files and the marker)."

    def add_arguments(self, parser):
        parser.add_argument("directory")

    def handle(self, *args, directory, **options):
        try:
            self.stdout.write(bundle_json(Path(directory)))
        except SkillError as exc:
            raise CommandError(str(exc))
