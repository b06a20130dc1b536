import argparse
from decimal import Decimal, InvalidOperation

from agents.audit import actor_name
from agents.management.base import Command as BaseCommand
from agents.management.base import JsonOutput
from agents.runtime_settings import parse_runtime_json, runtime_dict
from agents.services import ConfigurationError, configure_agent, parse_bridge_json


def budget_amount(value: str) -> Decimal | str:
    """USD per month (≥ 0), or "none" to remove the cap."""
    if value.lower() == "none":
        return "none"
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"expected an amount in USD or 'none', got {value!r}")
    if not amount.is_finite() or amount < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative amount, got {value!r}")
    return amount


class Command(JsonOutput, BaseCommand):
    help = "Create or update an agent profile; options not given keep their value."
    errors = (ConfigurationError,)

    def add_arguments(self, parser):
        parser.add_argument("agent_key")
        parser.add_argument(
            "--secrets-ref",
            action="extend",
            nargs="+",
            dest="secrets_ref",
            metavar="REF",
            help="The secret refs the agent uses (replaces the list; several or repeated).",
        )
        state = parser.add_mutually_exclusive_group()
        state.add_argument("--disable", action="store_const", const=False, dest="enabled")
        state.add_argument("--enable", action="store_const", const=True, dest="enabled")
        parser.add_argument("--bridge-json", help="Bridge config as a JSON object.")
        binding = parser.add_mutually_exclusive_group()
        binding.add_argument(
            "--require-telegram-binding",
            action="store_const",
            const=True,
            dest="require_telegram_binding",
        )
        binding.add_argument(
            "--no-require-telegram-binding",
            action="store_const",
            const=False,
            dest="require_telegram_binding",
        )
        parser.add_argument(
            "--runtime-json",
            help="Runtime settings as a JSON object (handler, model, base_url, "
            "api_key_secret_ref, temperature, max_tokens, timeout_seconds, system_prompt, "
            "price_per_million_input_tokens, price_per_million_output_tokens); keys left out "
            "keep their value, null resets one.",
        )
        parser.add_argument(
            "--monthly-budget-usd",
            type=budget_amount,
            help="Budget cap (SPEC §24): estimated USD per calendar month; 'none' removes it.",
        )

    def handle(self, *args, agent_key, **options):
        bridge = parse_bridge_json(options["bridge_json"]) if options["bridge_json"] else None
        runtime = None
        if options["runtime_json"] is not None:
            try:
                runtime = parse_runtime_json(options["runtime_json"])
            except ValueError as exc:
                raise ConfigurationError(str(exc))
        budget = options["monthly_budget_usd"]
        if budget is not None:
            runtime = {**(runtime or {}), "monthly_budget_usd": None}
            if budget != "none":
                runtime["monthly_budget_usd"] = budget
        profile, created = configure_agent(
            agent_key,
            actor=actor_name(command="configure_agent"),
            secrets_ref=options["secrets_ref"],
            enabled=options["enabled"],
            bridge_config=bridge,
            require_telegram_binding=options["require_telegram_binding"],
            runtime=runtime,
        )
        data = {
            "agent_key": profile.agent_key,
            "version": profile.version,
            "created": created,
            "enabled": profile.enabled,
            "secrets_ref": profile.secrets_ref,
            "bridge_config": profile.bridge_config,
            "require_telegram_binding": profile.require_telegram_binding,
            "runtime": runtime_dict(profile),
            "monthly_budget_usd": (
                None if profile.monthly_budget_usd is None else str(profile.monthly_budget_usd)
            ),
        }
        verb = "Created" if created else "Updated"
        self.emit(options, data, f"{verb} agent '{profile.agent_key}' (version {profile.version}).")
