"""Helpers for the foundation tests: run a command as ``manage.py`` would, and snapshot
every row a foundation command could write, to prove bad input changes nothing."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def cli(monkeypatch, capsys):
    """``cli("import_secret", "a.b", stdin="v")``: the argv path of ``manage.py`` (argparse
    errors, CommandError to stderr, exit status), in-process so it sees the test database."""
    from django.core.management import base as management_base
    from django.core.management import get_commands, load_command_class

    # run_from_argv closes every connection when done; the test's transaction needs its own.
    monkeypatch.setattr(management_base.connections, "close_all", lambda: None)

    def run(name: str, *args: str, stdin: str = "") -> CliResult:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        capsys.readouterr()
        command = load_command_class(get_commands()[name], name)
        try:
            command.run_from_argv(["manage.py", name, *args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture
def db_state(db):
    """A callable returning every foundation row as plain values."""
    from agents.models import AgentProfile, AuditEvent, RuntimeConfig, Secret

    def snapshot() -> dict:
        return {
            "secrets": [
                (s.secret_ref, s.version, s.active, bytes(s.ciphertext), s.key_id)
                for s in Secret.objects.order_by("pk")
            ],
            "profiles": list(AgentProfile.objects.order_by("pk").values()),
            "runtime": list(RuntimeConfig.objects.values()),
            "audit": list(AuditEvent.objects.order_by("pk").values_list("pk", flat=True)),
        }

    return snapshot
