import json

from django.core.management.base import BaseCommand, CommandError

from agents.audit import actor_name
from fly.cleanup import CleanupError, run_fly_cleanup


class Command(BaseCommand):
    help = (
        "Destroy every machine and volume of the Fly app (billing protection). Dry run by "
        "default: --apply destroys. Exits 1 when anything failed or remains."
    )

    def add_arguments(self, parser):
        parser.add_argument("--app", help="Target this app instead of the configured one.")
        parser.add_argument("--apply", action="store_true", help="Really destroy.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, app, apply, **options):
        try:
            report = run_fly_cleanup(
                app=app, apply=apply, actor=actor_name(command="run_fly_cleanup")
            )
        except CleanupError as exc:
            raise CommandError(str(exc))
        if options["json"]:
            self.stdout.write(json.dumps(report))
        else:
            for key, value in report.items():
                self.stdout.write(f"{key}: {value}")
            if not apply:
                self.stdout.write("Dry run: nothing was destroyed. Add --apply to destroy.")
        if report["errors"] or report["machines_remaining"] or report["volumes_remaining"]:
            self.stderr.write(
                f"Fly cleanup of {report['app_name']} is incomplete: "
                f"{len(report['errors'])} error(s), {report['machines_remaining']} machine(s) "
                f"and {report['volumes_remaining']} volume(s) remaining."
            )
            raise SystemExit(1)
