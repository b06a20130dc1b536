"""Start-up refuses dangerous configuration with one clear line (run in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KEY = "dGVzdC1rZXktMzItYnl0ZXMtbG9uZy0wMTIzNDU2Nzg="


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "SECRET_KEY", "AGENT_FACTORY_", "DEBUG"))
    }
    clean.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "env, message",
    [
        ({"AGENT_FACTORY_ENCRYPTION_KEYS": KEY}, "SECRET_KEY is not set"),
        ({"SECRET_KEY": "x" * 50}, "AGENT_FACTORY_ENCRYPTION_KEYS is not set"),
    ],
)
def test_debug_off_refuses_missing_keys(env, message, tmp_path):
    result = manage("check", DEBUG="0", AGENT_FACTORY_VAR_DIR=str(tmp_path), **env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "dev-encryption.key").exists()


def test_bad_key_is_a_system_check_error(tmp_path):
    result = manage(
        "check",
        DEBUG="0",
        SECRET_KEY="x" * 50,
        AGENT_FACTORY_ENCRYPTION_KEYS="c2hvcnQ=",
        AGENT_FACTORY_VAR_DIR=str(tmp_path),
    )
    assert result.returncode != 0
    assert "agents.E001" in result.stderr and "AES-256 needs exactly 32" in result.stderr


def test_debug_on_starts_with_a_generated_dev_key(tmp_path):
    result = manage("check", "--deploy", DEBUG="1", AGENT_FACTORY_VAR_DIR=str(tmp_path))
    assert "agents.W001" in result.stderr + result.stdout
    result = manage(
        "shell",
        "-c",
        "from agents.secret_store import get_key_ring; get_key_ring()",
        DEBUG="1",
        AGENT_FACTORY_VAR_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    key_file = tmp_path / "dev-encryption.key"
    assert key_file.exists() and oct(key_file.stat().st_mode & 0o777) == "0o600"
