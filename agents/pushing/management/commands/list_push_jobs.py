from agents.pushing.management.commands._base import PushCommand, job_view
from agents.pushing.models import PushJob


class Command(PushCommand):
    help = "List push jobs (newest change first), with their next run in UTC."

    def add_arguments(self, parser):
        parser.add_argument("--user", metavar="CONSUMER_USER_ID")
        parser.add_argument("--agent", metavar="AGENT_KEY")
        parser.add_argument("--limit", type=int, default=100)

    def handle(self, *args, user, agent, limit, **options):
        jobs = PushJob.objects.select_related("agent")
        if user:
            jobs = jobs.filter(consumer_user_id=user)
        if agent:
            jobs = jobs.filter(agent__agent_key=agent)
        views = [job_view(job) for job in jobs[: max(1, min(limit, 1000))]]
        lines = [
            f"#{v['id']} {v['periodicity']} {v['schedule']} {v['timezone']} → "
            f"{v['consumer_user_id'] or 'users of ' + str(v['agent_key'])}; "
            f"next {v['next_run_at'] or '-'}{'' if v['enabled'] else ' (disabled)'}"
            for v in views
        ]
        self.emit(options, {"results": views}, "\n".join(lines) or "No push jobs.")
