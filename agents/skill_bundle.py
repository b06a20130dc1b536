"""The global-skill bundle hash, shared by the server and the reference worker (SPEC §13).

bundle_sha256 = SHA-256 over the files sorted by path (code-point order), each contributing
``path``, NUL, its SHA-256 (lowercase hex), NUL, its content, NUL — all UTF-8.
"""

from __future__ import annotations

import hashlib

# The manifest layout both sides speak, and the file that marks a skill directory the
# worker wrote (never part of a bundle; only marked directories are ever removed).
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
