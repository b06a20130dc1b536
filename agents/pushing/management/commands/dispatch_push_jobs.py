from agents.pushing.dispatch import dispatch_push_jobs
from agents.pushing.management.commands._base import PushCommand


class Command(PushCommand):
    help = "Claim the due push slots and enqueue them (the every-minute schedule, by hand)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--no-drain", action="store_true", help="Only claim; leave the rows pending."
        )

    def handle(self, *args, no_drain, **options):
        report = dispatch_push_jobs(drain=not no_drain)
        self.emit(options, report, ", ".join(f"{k}: {v}" for k, v in report.items()))
