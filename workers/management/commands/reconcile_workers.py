from django.core.management.base import BaseCommand

from agents.audit import actor_name
from agents.management.base import JsonOutput
from workers.reconcile import reconcile


class Command(JsonOutput, BaseCommand):
    help = "Run one autoscaling pass: sweep leases, drain, spawn, tear down. Prints what it did."

    def handle(self, *args, **options):
        report = reconcile(actor=actor_name(command="reconcile_workers"))
        data = report.as_dict()
        if options["json"] or report.skipped:
            self.emit(options, data, f"Skipped: {report.skipped}.")
            return
        self.stdout.write(
            f"Swept {data['swept'].get('requeued', 0)} expired lease(s) "
            f"({data['swept'].get('dead_lettered', 0)} dead-lettered); "
            f"demand {report.demand}, running {report.running}."
        )
        for label in (
            "spawned",
            "spawn_failed",
            "drained",
            "stopping",
            "stopped",
            "teardown_failed",
        ):
            if data[label]:
                self.stdout.write(
                    f"{label.replace('_', ' ').capitalize()}: {', '.join(data[label])}"
                )
        if report.blocked:
            self.stderr.write(f"Not spawning: {report.blocked}")
        for error in report.errors:
            self.stderr.write(error)
