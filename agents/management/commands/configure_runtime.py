import argparse
from decimal import Decimal

from agents.audit import actor_name
from agents.management.base import Command as BaseCommand
from agents.management.base import JsonOutput
from agents.services import (
    RUNTIME_FIELDS,
    ConfigurationError,
    configure_runtime,
    runtime_config_dict,
)


def whole_number(value: str) -> int:
    """Shape only (argparse); the ranges are the model's validators, shared with the admin."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}")
    if number < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {number}")
    return number


# Whole-number settings without a help line of their own (each is a RuntimeConfig field).
SCALING_NUMBERS = (
    "--volume-size-gb",
    "--max-workers",
    "--spawn-step",
    "--idle-timeout-seconds",
    "--lease-seconds",
    "--stale-after-seconds",
    "--max-attempts",
)
QUOTA_NUMBERS = (  # SPEC §23
    "--user-rate-per-minute",
    "--user-burst",
    "--conversation-queue-cap",
    "--history-entries-per-job",
    "--history-bytes-per-job",
    "--snapshot-prepares-per-minute",
)


class Command(JsonOutput, BaseCommand):
    help = "Change the runtime config (provider, scaling, leases, prompt, quotas) and print it."
    errors = (ConfigurationError,)

    def add_arguments(self, parser):
        parser.add_argument("--provider", choices=["local", "fly", "none"], dest="provider_kind")
        parser.add_argument("--app-name", dest="app_name")
        parser.add_argument("--org", dest="organization_slug")
        parser.add_argument("--image")
        parser.add_argument("--region")
        parser.add_argument("--fallback-regions", help="Comma-separated regions, in order.")
        parser.add_argument("--volume-name")
        parser.add_argument("--volume-path")
        for flag in SCALING_NUMBERS:
            parser.add_argument(flag, type=whole_number)
        parser.add_argument(
            "--reassign-after-seconds",
            type=whole_number,
            help="Fair share: with max_workers reached, a worker idle this long moves to a "
            "waiting conversation (default 30).",
        )
        parser.add_argument(
            "--handoff-timeout-seconds",
            type=whole_number,
            help="How long a released conversation waits for its old worker's snapshot "
            "(default 120).",
        )
        parser.add_argument("--system-prompt")
        for flag in QUOTA_NUMBERS:
            parser.add_argument(flag, type=whole_number)
        parser.add_argument(
            "--monthly-budget-usd",
            type=Decimal,
            help="Budget cap of all agents together (SPEC §24), estimated USD per month.",
        )

    def handle(self, *args, **options):
        regions = options.pop("fallback_regions")
        # Every runtime setting this command has an option for (the rest are admin-only).
        changes = {key: options[key] for key in RUNTIME_FIELDS if key in options}
        if regions is not None:
            changes["fallback_regions"] = [r.strip() for r in regions.split(",") if r.strip()]
        config = configure_runtime(actor=actor_name(command="configure_runtime"), **changes)
        data = runtime_config_dict(config)
        self.emit(options, data, "\n".join(f"{key}: {value}" for key, value in data.items()))
