from telegram.management.commands._base import TelegramCommand
from telegram.readiness import readiness


class Command(TelegramCommand):
    help = "Readiness of an agent: each item with ok and reason, and the next action."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("agent_key")

    def handle(self, *args, agent_key, **options):
        report = readiness(agent_key)
        lines = [
            f"{'ok ' if i['ok'] else 'NO '} {name}: {i['reason']}"
            for name, i in report["items"].items()
        ]
        lines.append(f"next_action: {report['next_action']}")
        self.emit(options, report, "\n".join(lines))
