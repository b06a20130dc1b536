from django.core.management.base import CommandError

from agents.audit import actor_name
from agents.pushing.dispatch import drain_pending
from agents.pushing.management.commands._base import PushCommand
from agents.pushing.models import PushJob
from agents.pushing.services import trigger_push_job


class Command(PushCommand):
    help = "Send a push job now, whatever its schedule (its next run stays as it is)."

    def add_arguments(self, parser):
        parser.add_argument("job_id", type=int)

    def handle(self, *args, job_id, **options):
        job = PushJob.objects.select_related("agent").filter(pk=job_id).first()
        if job is None:
            raise CommandError(f"Push job #{job_id} does not exist.")
        row = trigger_push_job(job, actor=actor_name(command="trigger_push_job"))
        drained = drain_pending(budget_seconds=3600)
        row.refresh_from_db()
        data = {
            "job_id": job.pk,
            "run_key": row.run_key,
            "status": row.status,
            "message_id": row.message_id,
            "error": row.error,
            "broadcast_id": row.broadcast_id,
            **drained,
        }
        self.emit(options, data, f"Push job #{job.pk} triggered ({row.run_key}): {row.status}.")
