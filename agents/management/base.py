"""A base for the project's management commands: bad input ends in one clear line.

SPEC §19 wants commands to exit non-zero with one clear line on stderr. Django already
turns ``CommandError`` into ``CommandError: <message>`` and exit status 1, but argparse
prints the whole usage block (many lines for commands with many options) before its error.
Commands built on ``Command`` print only ``<prog>: error: <message>`` and exit 2.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        if parser.called_from_command_line:
            # From call_command() Django raises CommandError instead; keep that path as is.
            def one_line_error(message: str):
                parser.exit(2, f"{parser.prog}: error: {message} (see --help)\n")

            parser.error = one_line_error
        return parser
