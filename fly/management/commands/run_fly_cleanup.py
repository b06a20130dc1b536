from django.core.management.base import BaseCommand

from agents.audit import actor_name
from agents.management.base import JsonOutput
from fly.cleanup import CleanupError, run_fly_cleanup


class Command(JsonOutput, BaseCommand):
    help = (
        "Destroy every machine and volume of the Fly app (billing protection). Dry run by "
        "default: --apply destroys. Exits 1 when anything failed or remains."
    )
    errors = (CleanupError,)

    def add_arguments(self, parser):
        parser.add_argument("--app", help="Target this app instead of the configured one.")
        parser.add_argument("--apply", action="store_true", help="Really destroy.")

    def handle(self, *args, app, apply, **options):
        report = run_fly_cleanup(app=app, apply=apply, actor=actor_name(command="run_fly_cleanup"))
        lines = [f"{key}: {value}" for key, value in report.items()]
        if not apply:
            lines.append("Dry run: nothing was destroyed. Add --apply to destroy.")
        self.emit(options, report, "\n".join(lines))
        if report["errors"] or report["machines_remaining"] or report["volumes_remaining"]:
            self.stderr.write(
                f"Fly cleanup of {report['app_name']} is incomplete: "
                f"{len(report['errors'])} error(s), {report['machines_remaining']} machine(s) "
                f"and {report['volumes_remaining']} volume(s) remaining."
            )
            raise SystemExit(1)
