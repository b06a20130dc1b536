from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from agents.audit import actor_name, record_audit
from workers.models import Worker
from workers.tokens import mint_worker_token


class Command(BaseCommand):
    help = (
        "Mint a bearer token for WORKER_ID (registering the worker as active if it is new) "
        "and print only the token. Any earlier token of that worker stops working."
    )

    def add_arguments(self, parser):
        parser.add_argument("worker_id")

    def handle(self, *args, worker_id, **options):
        worker_id = worker_id.strip()
        if (
            not worker_id
            or len(worker_id) > 100
            or not worker_id.replace("-", "").replace("_", "").replace(".", "").isalnum()
        ):
            raise CommandError(
                "WORKER_ID must be 1-100 characters of letters, digits, '-', '_' or '.'."
            )
        with transaction.atomic():
            worker, created = Worker.objects.get_or_create(
                worker_id=worker_id, defaults={"provider": "none"}
            )
            if worker.status == Worker.STOPPED:
                raise CommandError(f"Worker '{worker_id}' is stopped; choose a new worker id.")
            token = mint_worker_token(worker)
            record_audit(
                actor_name(command="issue_worker_token"),
                "worker.issue_token",
                worker,
                created=created,
            )
        self.stdout.write(token)
