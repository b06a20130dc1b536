from agents.audit import actor_name
from telegram.management.commands._base import TelegramCommand
from telegram.pairing import soft_reset_legacy


class Command(TelegramCommand):
    help = (
        "Find telegram_pairing bindings and pending codes from before bot identities. "
        "Dry run by default; --apply with --revoke-bindings and/or --expire-pairings."
    )

    def add_arguments(self, parser):
        parser.add_argument("--apply", action="store_true")
        parser.add_argument("--revoke-bindings", action="store_true")
        parser.add_argument("--expire-pairings", action="store_true")

    def handle(self, *args, apply, revoke_bindings, expire_pairings, **options):
        report = soft_reset_legacy(
            apply=apply,
            revoke_bindings=revoke_bindings,
            expire_pairings=expire_pairings,
            actor=actor_name(command="soft_reset_telegram_bindings"),
        )
        text = "\n".join(f"{k}: {v}" for k, v in report.items())
        if not apply:
            text += "\nDry run: nothing was changed. Add --apply to write."
        self.emit(options, report, text)
