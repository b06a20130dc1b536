from django.core.management.base import CommandError

from agents.audit import actor_name
from telegram.bots import TelegramSetupError, reconcile_bot_identity
from telegram.management.commands._base import TelegramCommand
from telegram.models import Bot


class Command(TelegramCommand):
    help = "Call getMe with the stored token and resync the bot identity and username."

    def add_arguments(self, parser):
        parser.add_argument("agent_key", nargs="?")
        parser.add_argument("--all", action="store_true", help="Every agent with a bot.")

    def handle(self, *args, agent_key, all, **options):
        if bool(agent_key) == bool(all):
            raise CommandError("Give either AGENT_KEY or --all.")
        keys = (
            [agent_key]
            if agent_key
            else list(Bot.objects.values_list("agent__agent_key", flat=True))
        )
        results, errors = [], []
        for key in keys:
            try:
                results.append(
                    reconcile_bot_identity(key, actor=actor_name(command="reconcile_bot_identity"))
                )
            except TelegramSetupError as exc:
                errors.append({"agent_key": key, "error": str(exc)})
        lines = [
            f"{r['agent_key']}: @{r['username']} ({r['bot_identity']})"
            + (" changed" if r["changed"] else "")
            for r in results
        ]
        lines += [f"{e['agent_key']}: {e['error']}" for e in errors]
        for result in results:
            for warning in result["warnings"]:
                self.stderr.write(f"Warning: {result['agent_key']}: {warning}")
        self.emit(options, {"results": results, "errors": errors}, "\n".join(lines) or "No bots.")
        if errors:
            raise CommandError(f"{len(errors)} agent(s) failed.")
