import json

from django.core.management.base import CommandError

from agents.audit import actor_name
from agents.pushing.management.commands._base import PushCommand, job_view
from agents.pushing.models import PushJob
from agents.pushing.services import save_push_job


class Command(PushCommand):
    help = (
        "Create a push job for one user (--user) or for every bound user of an agent "
        "(--agent-users). Prints the job with its next run (UTC)."
    )

    def add_arguments(self, parser):
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", metavar="CONSUMER_USER_ID")
        who.add_argument("--agent-users", metavar="AGENT_KEY")
        parser.add_argument("--text", default="")
        parser.add_argument("--title", default="")
        parser.add_argument("--template", metavar="PUSH_TEMPLATE_KEY")
        parser.add_argument(
            "--periodicity", required=True, choices=["manual", "daily", "weekly", "monthly"]
        )
        parser.add_argument("--time", help="HH:mm, local to --timezone.")
        parser.add_argument("--weekday", help="Weekly: 1 = Monday … 7 = Sunday.")
        parser.add_argument("--day", help="Monthly: 1–31 (clamped to month end) or 'last'.")
        parser.add_argument("--timezone", default="UTC", help="IANA name (default UTC).")
        parser.add_argument("--agent", help="With --user: the agent (informational).")
        parser.add_argument("--disabled", action="store_true")
        parser.add_argument(
            "--tenant", help="Whose user and templates (default: the agent's, else 'default')."
        )

    def handle(self, *args, **options):
        schedule = {
            key: options[key] for key in ("time", "weekday", "day") if options[key] is not None
        }
        for key in ("weekday", "day"):
            if key in schedule and schedule[key] != "last":
                try:
                    schedule[key] = int(schedule[key])
                except ValueError:
                    raise CommandError(f"--{key} must be a whole number (got {schedule[key]!r}).")
        job = save_push_job(
            actor=actor_name(command="create_push_job"),
            target=PushJob.AGENT_USERS if options["agent_users"] else PushJob.USER,
            consumer_user_id=options["user"] or "",
            agent_key=options["agent_users"] or options["agent"],
            text=options["text"],
            title=options["title"],
            template_key=options["template"],
            periodicity=options["periodicity"],
            timezone_name=options["timezone"],
            schedule=schedule,
            enabled=not options["disabled"],
            tenant=options["tenant"],
        )
        view = job_view(job)
        self.emit(
            options,
            view,
            f"Created push job #{job.pk}; next run: {view['next_run_at'] or 'none'}.\n"
            + json.dumps(view["schedule"]),
        )
