"""Shared by the OpenClaw tests: the real install (skipped when absent, a failure when
``OPENCLAW_REQUIRED=1`` — CI installs it), a runtime section and a key-leak scan."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from django.db import connection

from workers.runtime.openclaw_setup import OpenClawUnavailable, find_install

API_KEY = "sk-af-test-7f3a9c1e5b2d4086"  # distinctive: found anywhere means leaked


def require_openclaw():
    """Real OpenClaw turns are a heavy proof: they run once, on the PostgreSQL pass of CI
    (a few minutes each pass otherwise), and there fail instead of skipping when
    OPENCLAW_REQUIRED=1 and the install is missing."""
    if connection.vendor != "postgresql":
        pytest.skip("real OpenClaw turns run on the PostgreSQL pass")
    try:
        return find_install()
    except OpenClawUnavailable as exc:
        if os.environ.get("OPENCLAW_REQUIRED") == "1":
            pytest.fail(f"OPENCLAW_REQUIRED=1 but {exc}")
        pytest.skip(str(exc))


def runtime_section(base_url: str, **overrides) -> dict:
    """What the server's hydration ``runtime`` section holds for an openclaw agent."""
    return {
        "handler": "openclaw",
        "model": "fake-model",
        "base_url": base_url,
        "api_key": API_KEY,
        "temperature": 0.2,
        "max_tokens": 256,
        "timeout_seconds": 120,
        "system_prompt": "You are Pirate Pete. Always answer like a pirate.",
        **overrides,
    }


def files_containing(root: Path, needle: str) -> list[str]:
    """Every regular file under ``root`` whose bytes contain ``needle`` (links not followed)."""
    found = []
    for directory, _dirs, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            if path.is_symlink() or not path.is_file():
                continue
            if needle.encode() in path.read_bytes():
                found.append(str(path))
    return found


def archive_members_containing(archive: bytes, needle: str) -> list[str]:
    found = []
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isreg() and needle.encode() in tar.extractfile(member).read():
                found.append(member.name)
    return found


def request_text(body: dict) -> str:
    """All the message text a chat-completions request carried."""
    parts = []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
        else:
            parts.append(str(content))
    return "\n".join(parts)
