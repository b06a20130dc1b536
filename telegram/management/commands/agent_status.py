from django.core.management.base import CommandError

from telegram.management.commands._base import TelegramCommand
from telegram.readiness import readiness
from workers.usage import PERIODS, usage_summary


class Command(TelegramCommand):
    help = (
        "Readiness of an agent: each item with ok and reason, and the next action; "
        "--usage: its tokens and cost per consumer user per day or month."
    )

    def add_arguments(self, parser):
        parser.add_argument("agent_key")
        parser.add_argument(
            "--usage",
            nargs="?",
            const="day",
            choices=sorted(PERIODS),
            help="Print usage sums instead (per day by default, or per month).",
        )

    def handle(self, *args, agent_key, **options):
        if options["usage"]:
            return self.print_usage(agent_key, options)
        report = readiness(agent_key)
        lines = [
            f"{'ok ' if i['ok'] else 'NO '} {name}: {i['reason']}"
            for name, i in report["items"].items()
        ]
        lines.append(f"next_action: {report['next_action']}")
        self.emit(options, report, "\n".join(lines))

    def print_usage(self, agent_key: str, options) -> None:
        from agents.models import AgentProfile

        if not AgentProfile.objects.filter(agent_key=agent_key).exists():
            raise CommandError(f"Agent profile '{agent_key}' not found.")
        period = options["usage"]
        rows = usage_summary(period=period, agent_key=agent_key)
        lines = [f"usage of {agent_key} per {period}:"] if rows else [f"no usage for {agent_key}"]
        lines += [
            f"{r['period']}  {r['consumer_user']}: {r['input_tokens']} in, "
            f"{r['output_tokens']} out, ${r['cost_usd']}, {r['attempts']} attempts "
            f"({r['failed_attempts']} failed)"
            for r in rows
        ]
        data = {"agent_key": agent_key, "period": period, "usage": rows}
        self.emit(options, data, "\n".join(lines))
