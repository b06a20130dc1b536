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


# The whole-number settings (each a RuntimeConfig field) and their help, if any.
WHOLE_NUMBERS = {
    "--volume-size-gb": None,
    "--max-workers": None,
    "--spawn-step": None,
    "--idle-timeout-seconds": None,
    "--lease-seconds": None,
    "--stale-after-seconds": None,
    "--max-attempts": None,
    "--reassign-after-seconds": "Fair share: with max_workers reached, a worker idle this "
    "long moves to a waiting conversation (default 30).",
    "--handoff-timeout-seconds": "How long a released conversation waits for its old "
    "worker's snapshot (default 120).",
    # Quotas (SPEC §23)
    "--user-rate-per-minute": None,
    "--user-burst": None,
    "--conversation-queue-cap": None,
    "--history-entries-per-job": None,
    "--history-bytes-per-job": None,
    "--snapshot-prepares-per-minute": None,
}


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
        parser.add_argument("--system-prompt")
        for flag, help_text in WHOLE_NUMBERS.items():
            parser.add_argument(flag, type=whole_number, help=help_text)
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
