"""A conversation's workspace between workers (SPEC §12, §23): restore the newest usable
snapshot into the data dir at start, archive and upload it at a stop or a hand-over.

Plain functions of the API client and the worker's settings, so the loop in ``runner``
decides when and these decide how."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from workers.runtime.api_client import ApiError, DownloadTooLarge, WorkerApiClient
from workers.runtime.archive import (
    WORK_DIR,
    ArchiveRefused,
    make_archive,
    restore_archive,
    work_dir,
)

logger = logging.getLogger("agent_factory.worker")

# Refused snapshots to step past before starting with an empty workspace.
MAX_RESTORE_FALLBACKS = 10


def restore_latest(client: WorkerApiClient, settings, conversation_id: str, agent_key: str) -> bool:
    """Restore the newest usable snapshot of the conversation into the data dir.

    An archive that breaks a rule (SPEC §23) is reported to the server (the snapshot
    becomes ``failed`` with the reason) and the next older ready one is tried. Never
    raises: with nothing usable the worker starts with an empty workspace and serves.
    """
    # Leftovers of a worker killed mid-download or mid-restore on this data dir.
    shutil.rmtree(settings.data_dir / WORK_DIR, ignore_errors=True)
    before = None
    for _ in range(MAX_RESTORE_FALLBACKS):
        try:
            snapshot = client.latest_snapshot(
                settings.workspace_id, agent_key, conversation_id, before=before
            )
        except ApiError as exc:
            logger.warning("Snapshot restore skipped: %s", exc)
            return False
        if not snapshot:
            return False
        snapshot_id = snapshot["snapshot_id"]
        try:
            _restore_one(client, settings, snapshot)
        except ArchiveRefused as exc:
            logger.error("Snapshot %s refused: %s; trying an older one.", snapshot_id, exc)
            _reject(client, snapshot_id, str(exc))
            before = snapshot_id
            continue
        except (ApiError, OSError) as exc:
            # The network or the disk, not the archive: it stays ready for the next worker.
            logger.warning("Snapshot %s not restored: %s", snapshot_id, exc)
            return False
        logger.info("Restored snapshot %s for %s.", snapshot_id, conversation_id)
        return True
    logger.error("No usable snapshot among the newest %d; starting empty.", MAX_RESTORE_FALLBACKS)
    return False


def _restore_one(client: WorkerApiClient, settings, snapshot: dict) -> None:
    data_dir = settings.data_dir
    limits = settings.archive_limits
    with tempfile.TemporaryDirectory(dir=work_dir(data_dir), prefix="download-") as scratch:
        archive = Path(scratch) / "snapshot.tar.gz"
        try:
            client.download_to(snapshot["download_url"], archive, limits.max_download_bytes)
            restore_archive(archive, snapshot["sha256"], data_dir, limits)
        except DownloadTooLarge as exc:
            raise ArchiveRefused(f"the archive is {exc.detail}") from None
        except (ArchiveRefused, ApiError, OSError):
            raise
        except Exception as exc:  # an archive must never take the worker down
            logger.exception("Unexpected error restoring snapshot %s.", snapshot["snapshot_id"])
            raise ArchiveRefused(f"cannot be restored ({type(exc).__name__})") from None


def _reject(client: WorkerApiClient, snapshot_id: int, reason: str) -> None:
    try:
        client.reject_snapshot(snapshot_id, f"refused at restore: {reason}")
    except ApiError as exc:  # the fallback still works: it asks for one older than this
        logger.warning("Could not mark snapshot %s failed: %s", snapshot_id, exc)


def take_snapshot(
    client: WorkerApiClient,
    settings,
    conversation_id: str,
    agent_key: str,
    reason: str,
) -> int | None:
    """Archive the data dir and upload it as the conversation's newest snapshot; None when
    nothing was stored (said in the log: the next worker restores the previous one)."""
    data_dir = settings.data_dir
    with tempfile.TemporaryDirectory(dir=work_dir(data_dir), prefix="snapshot-") as scratch:
        archive = Path(scratch) / "snapshot.tar.gz"
        try:
            sha256, size = make_archive(data_dir, archive, settings.archive_limits)
        except ArchiveRefused as exc:
            # Past the limits no worker would restore it: not uploaded, said loudly.
            logger.error("Snapshot not taken: the workspace has %s.", exc)
            return None
        except OSError as exc:
            logger.error("Snapshot not taken: %s", exc)
            return None
        try:
            snapshot_id = client.upload_snapshot(
                workspace_id=settings.workspace_id,
                agent_key=agent_key,
                conversation_id=conversation_id,
                reason=reason,
                archive=archive,
                sha256=sha256,
            )
        except ApiError as exc:
            logger.warning("Snapshot upload failed: %s", exc)
            return None
    logger.info("Snapshot %s stored (%d bytes).", snapshot_id, size)
    return snapshot_id
