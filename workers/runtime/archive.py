"""Workspace archives: tar.gz of the data dir, and safe restore."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

SKIP_DIRS = {"skills"}  # re-materialised from the manifest at every start


def remove_entry(path: Path) -> None:
    """Delete a file, a symlink (never what it points to) or a directory tree."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def clear_data_dir(data_dir: Path) -> None:
    """Empty the data dir of everything a snapshot would hold (SKIP_DIRS stay)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for child in data_dir.iterdir():
        if child.name not in SKIP_DIRS:
            remove_entry(child)


def make_archive(data_dir: Path) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        if data_dir.exists():
            for child in sorted(data_dir.iterdir()):
                if child.name in SKIP_DIRS:
                    continue
                tar.add(child, arcname=child.name)
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def restore_archive(data: bytes, expected_sha256: str, data_dir: Path) -> None:
    """Verify the hash, then extract into a fresh directory and swap it in."""
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise ValueError("Snapshot archive does not match its SHA-256; not restored.")
    staging = data_dir.with_name(data_dir.name + ".restoring")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(staging, filter="data")  # refuses absolute paths, .. and devices
    data_dir.mkdir(parents=True, exist_ok=True)
    for child in staging.iterdir():
        target = data_dir / child.name
        if target.exists():
            remove_entry(target)
        child.rename(target)
    shutil.rmtree(staging, ignore_errors=True)
