"""The global-skills format as the worker reads it (SPEC §13): manifest layout, marker file
and hashes. The server computes the same in ``agents.skill_bundle``; the two are separate
programs speaking one format, and ``tests/workers/test_skill_layout_contract.py`` holds them
to it.

bundle_sha256 = SHA-256 over the files sorted by path (code-point order), each contributing
``path``, NUL, its SHA-256 (lowercase hex), NUL, its content, NUL — all UTF-8.
"""

from __future__ import annotations

import hashlib

# The manifest layout this worker understands, and the file that marks a skill directory it
# wrote (never part of a bundle; only marked directories are ever removed).
LAYOUT_VERSION = "openclaw-workspace-skill-v1"
MARKER = ".af-global-skill.json"


def file_sha256(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def bundle_sha256(files: list[dict]) -> str:
    digest = hashlib.sha256()
    for item in sorted(files, key=lambda f: f["path"]):
        digest.update(item["path"].encode() + b"\0")
        digest.update(file_sha256(item["content"]).encode() + b"\0")
        digest.update(item["content"].encode() + b"\0")
    return digest.hexdigest()
