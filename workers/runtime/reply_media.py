"""A reply's files (SPEC §7 ``jobs/<id>/uploads/``, §22): uploaded under the job's lease
before ``complete`` names them by id; the server sends them."""

from __future__ import annotations

import logging
from pathlib import Path

from workers.runtime.archive import WORK_DIR

logger = logging.getLogger("agent_factory.worker")


def upload_reply_media(client, job: dict, files) -> list[dict]:
    """Upload each file; returns the reply's ``media`` items, in the handler's order. An
    error (a refused file, a lost lease) propagates: the job fails or aborts, no half
    reply is completed."""
    media = []
    for reply_file in files:
        upload_id = client.upload_reply_file(
            job, Path(reply_file.path), reply_file.kind, reply_file.file_name
        )
        media.append({"kind": reply_file.kind, "upload_id": upload_id})
    return media


def discard_scratch_files(files, data_dir: Path) -> None:
    """Files a handler left in the data dir's scratch area go once uploaded (they are never
    snapshotted, but would pile up on a long-lived worker); files elsewhere are the
    handler's own."""
    scratch = (data_dir / WORK_DIR).resolve()
    for reply_file in files:
        path = Path(reply_file.path).resolve()
        if scratch in path.parents:
            path.unlink(missing_ok=True)
