"""Where a worker keeps its data dir when nobody says otherwise (SPEC §23).

Outside the project's ``var/``: a worker runs agent code, and ``var/`` holds the embedded
SQLite database and the development encryption key. The default is a per-worker directory
under the system temp dir.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

ROOT_NAME = "agent-factory-workers"
# A worker id becomes one path component: nothing that could climb out of the root.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def default_data_root() -> Path:
    return Path(tempfile.gettempdir()) / ROOT_NAME


def data_dir_under(root: Path, worker_id: str) -> Path:
    """``root/<worker_id>``; a worker id that is not a plain name is refused."""
    if not _SAFE_ID.match(worker_id) or worker_id in (".", ".."):
        raise ValueError(f"{worker_id!r} is not usable as a data dir name")
    return Path(root) / worker_id


def default_data_dir(worker_id: str) -> Path:
    return data_dir_under(default_data_root(), worker_id)
