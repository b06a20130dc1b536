import json

from django.core.management.base import BaseCommand
from django.db import transaction

from agents.audit import actor_name, record_audit
from workers.sweep import sweep_expired_leases


class Command(BaseCommand):
    help = "Requeue processing messages whose lease expired (counts an attempt)."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, **options):
        with transaction.atomic():  # the requeue and its audit row land together
            report = sweep_expired_leases()
            if report["requeued"] or report["dead_lettered"]:
                record_audit(
                    actor_name(command="release_stuck_jobs"), "queue.release_stuck", None, **report
                )
        if options["json"]:
            self.stdout.write(json.dumps(report))
        else:
            self.stdout.write(
                f"Requeued {report['requeued']} message(s), "
                f"dead-lettered {report['dead_lettered']}."
            )
