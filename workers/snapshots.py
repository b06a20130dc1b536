"""Workspace snapshots per (workspace, agent, conversation): prepare → upload → finalize."""

from __future__ import annotations

import datetime as dt
import hashlib

from django.conf import settings
from django.core.files.base import File
from django.db import transaction
from django.utils import timezone

from agents.models import Conversation, RuntimeConfig
from workers import quotas
from workers.models import DataSnapshot, Message, Worker

CHUNK = 1024 * 1024


class SnapshotError(Exception):
    def __init__(self, code: str, detail: str, retry_after: int | None = None):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.retry_after = retry_after


def prepare_snapshot(
    worker: Worker, *, workspace_id: str, agent_key: str, conversation_id: str, reason: str
) -> DataSnapshot:
    if not worker_may_access_conversation(worker, conversation_id):
        raise SnapshotError("forbidden", "This worker was never assigned to that conversation.")
    # A conversation keeps its agent for life: a snapshot filed under another agent key
    # could never be restored, so it is refused rather than stored.
    owner_key = (
        Conversation.objects.filter(conversation_id=conversation_id)
        .values_list("agent__agent_key", flat=True)
        .first()
    )
    if owner_key is not None and owner_key != agent_key:
        raise SnapshotError(
            "invalid_request",
            f"Conversation '{conversation_id}' belongs to agent '{owner_key}', not '{agent_key}'.",
        )
    with transaction.atomic():
        # The worker's row lock serialises its concurrent prepares for the rate check.
        Worker.objects.select_for_update().filter(pk=worker.pk).first()
        try:
            quotas.check_prepare_rate(worker)
        except quotas.PrepareThrottled as exc:
            raise SnapshotError("throttled", exc.detail, retry_after=exc.retry_after) from None
        return DataSnapshot.objects.create(
            workspace_id=workspace_id,
            agent_key=agent_key,
            worker_id=worker.worker_id,
            conversation_id=conversation_id,
            reason=reason,
        )


class _TooLarge(Exception):
    """Raised while streaming an upload past AGENT_FACTORY_SNAPSHOT_MAX_BYTES."""


def _not_uploading(snapshot: DataSnapshot) -> SnapshotError:
    return SnapshotError("conflict", f"Snapshot {snapshot.pk} is {snapshot.status}, not uploading.")


def store_upload(snapshot: DataSnapshot, stream) -> tuple[str, int]:
    """Stream the archive into storage, hashing as it goes (the server's own SHA-256).

    A retried upload replaces the earlier bytes; once the snapshot is finalized or failed
    the upload is refused and the stored archive stays as it was.
    """
    if snapshot.status != DataSnapshot.UPLOADING:
        raise _not_uploading(snapshot)
    digest = hashlib.sha256()
    size = 0
    limit = settings.AGENT_FACTORY_SNAPSHOT_MAX_BYTES

    class _Hashing:
        def read(self, n=-1):
            nonlocal size
            chunk = stream.read(CHUNK if n is None or n < 0 else n)
            digest.update(chunk)
            size += len(chunk)
            if size > limit:
                raise _TooLarge()
            return chunk

    previous = snapshot.archive.name if snapshot.archive else ""
    # Written under a fresh name and swapped in by a conditional update, so a concurrent
    # finalize never sees a half-written archive and a late upload changes nothing.
    storage = snapshot.archive.storage
    target = snapshot.archive.field.generate_filename(snapshot, f"snapshot-{snapshot.pk}.tar.gz")
    target = storage.get_available_name(target)
    try:
        name = storage.save(target, File(_Hashing(), name="archive"))
    except _TooLarge:
        # Nothing was swapped in; remove what the storage wrote of it so far.
        if storage.exists(target):
            storage.delete(target)
        raise SnapshotError(
            "too_large", f"The archive is larger than the {limit}-byte snapshot limit."
        ) from None
    swapped = DataSnapshot.objects.filter(pk=snapshot.pk, status=DataSnapshot.UPLOADING).update(
        archive=name, sha256=digest.hexdigest(), size_bytes=size
    )
    if not swapped:
        storage.delete(name)
        snapshot.refresh_from_db()
        raise _not_uploading(snapshot)
    if previous and previous != name:
        storage.delete(previous)
    snapshot.refresh_from_db()
    return snapshot.sha256, size


def finalize_snapshot(worker: Worker, snapshot: DataSnapshot, *, sha256: str, size_bytes: int):
    """Mark the snapshot ready if the worker's checksum and size match the server's own."""
    from workers.lifecycle import on_final_snapshot

    config = RuntimeConfig.get_cached()
    with transaction.atomic():
        snapshot = DataSnapshot.objects.select_for_update().get(pk=snapshot.pk)
        if snapshot.status != DataSnapshot.UPLOADING:
            raise _not_uploading(snapshot)
        if not snapshot.archive or not snapshot.sha256:
            raise SnapshotError("invalid_request", "Upload the archive before finalizing.")
        if snapshot.sha256 != sha256.lower() or snapshot.size_bytes != size_bytes:
            raise SnapshotError(
                "checksum_mismatch",
                "The uploaded archive's SHA-256 or size differs from the one given.",
            )
        now = timezone.now()
        DataSnapshot.objects.filter(pk=snapshot.pk).update(
            status=DataSnapshot.READY,
            completed_at=now,
            expires_at=now + dt.timedelta(seconds=config.snapshot_retention_seconds),
        )
        snapshot.refresh_from_db()
        on_final_snapshot(worker, snapshot)
    return snapshot


def fail_snapshot(snapshot: DataSnapshot, error: str) -> DataSnapshot:
    """An upload the worker gave up on; it is never restored (its file goes at expiry)."""
    failed = DataSnapshot.objects.filter(pk=snapshot.pk, status=DataSnapshot.UPLOADING).update(
        status=DataSnapshot.FAILED, error=(error or "")[:5000], completed_at=timezone.now()
    )
    snapshot.refresh_from_db()
    if not failed:
        raise _not_uploading(snapshot)
    return snapshot


def latest_snapshot(workspace_id: str, agent_key: str, conversation_id: str) -> DataSnapshot | None:
    """The newest ready, unexpired snapshot of the triple (skipping failed newer ones)."""
    now = timezone.now()
    return (
        DataSnapshot.objects.filter(
            workspace_id=workspace_id,
            agent_key=agent_key,
            conversation_id=conversation_id,
            status=DataSnapshot.READY,
        )
        .exclude(expires_at__lte=now)
        .order_by("-created_at", "-id")
        .first()
    )


def worker_may_access_conversation(worker: Worker, conversation_id: str) -> bool:
    """Assigned to it now, or held a lease in it (the warm-workspace rule, SPEC §7)."""
    if worker.assigned_conversation_id and worker.assigned_conversation.conversation_id == (
        conversation_id
    ):
        return True
    return Message.objects.filter(
        conversation__conversation_id=conversation_id, claimed_by=worker.worker_id
    ).exists()


def expire_old_snapshots(now: dt.datetime | None = None) -> dict:
    """Expire snapshots past retention (and abandoned uploads after a day); delete files."""
    now = now or timezone.now()
    stale_uploads = now - dt.timedelta(days=1)
    expired = 0
    files_deleted = 0
    candidates = DataSnapshot.objects.filter(
        status=DataSnapshot.READY, expires_at__lte=now
    ) | DataSnapshot.objects.filter(
        status__in=[DataSnapshot.UPLOADING, DataSnapshot.FAILED], created_at__lte=stale_uploads
    )
    for snapshot in candidates.order_by("id")[:1000]:
        if snapshot.archive:
            snapshot.archive.delete(save=False)
            files_deleted += 1
        DataSnapshot.objects.filter(pk=snapshot.pk).update(status=DataSnapshot.EXPIRED, archive="")
        expired += 1
    return {"expired": expired, "files_deleted": files_deleted}
