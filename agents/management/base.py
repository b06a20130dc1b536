"""A base for the project's management commands: bad input ends in one clear line.

SPEC §19 wants commands to exit non-zero with one clear line on stderr. Django already
turns ``CommandError`` into ``CommandError: <message>`` and exit status 1, but argparse
prints the whole usage block (many lines for commands with many options) before its error.
Commands built on ``Command`` print only ``<prog>: error: <message>`` and exit 2.

``JsonOutput`` is the ``--json`` option and the domain-error translation every app's
commands share.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        if parser.called_from_command_line:
            # From call_command() Django raises CommandError instead; keep that path as is.
            def one_line_error(message: str):
                parser.exit(2, f"{parser.prog}: error: {message} (see --help)\n")

            parser.error = one_line_error
        return parser


class JsonOutput:
    """Mixin for a command: ``--json`` prints one JSON object instead of the text, and the
    domain errors named in ``errors`` end as one ``CommandError`` line (never a traceback).

    A mixin rather than a base, so each command keeps its own parser behaviour; ``--json`` is
    added to the parser here, so a command's ``add_arguments`` declares only its own options.
    """

    errors: tuple[type[Exception], ...] = ()

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")
        return parser

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except self.errors as exc:
            raise CommandError(str(exc))

    def emit(self, options, data, text: str) -> None:
        self.stdout.write(json.dumps(data, default=str) if options.get("json") else text)
