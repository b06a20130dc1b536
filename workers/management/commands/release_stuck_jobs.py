from django.core.management.base import BaseCommand
from django.db import transaction

from agents.audit import actor_name, record_audit
from agents.management.base import JsonOutput
from workers.sweep import sweep_expired_leases


class Command(JsonOutput, BaseCommand):
    help = "Requeue processing messages whose lease expired (counts an attempt)."

    def handle(self, *args, **options):
        with transaction.atomic():  # the requeue and its audit row land together
            report = sweep_expired_leases()
            if report["requeued"] or report["dead_lettered"]:
                record_audit(
                    actor_name(command="release_stuck_jobs"), "queue.release_stuck", None, **report
                )
        self.emit(
            options,
            report,
            f"Requeued {report['requeued']} message(s), dead-lettered {report['dead_lettered']}.",
        )
