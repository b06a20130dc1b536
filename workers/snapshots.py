"""Workspace snapshots per (workspace, agent, conversation): prepare → upload → finalize."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.core.files.base import File
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.audit import record_audit
from agents.errors import DomainError
from agents.models import Conversation, RuntimeConfig
from workers import quotas
from workers.lifecycle import end_handoff, on_final_snapshot
from workers.models import DataSnapshot, Message, Worker
from workers.streams import CappedHashingReader, StreamTooLarge

# The worker API's status for each refusal code (SPEC §7).
SNAPSHOT_ERROR_STATUS = {
    "forbidden": 403,
    "conflict": 409,
    "checksum_mismatch": 400,
    "too_large": 413,
    "invalid_request": 400,
    "throttled": 429,
}


class SnapshotError(DomainError):
    def __init__(self, code: str, detail: str, retry_after: int | None = None):
        super().__init__(
            detail,
            code=code,
            status_code=SNAPSHOT_ERROR_STATUS.get(code, 400),
            retry_after=retry_after,
        )


def prepare_snapshot(
    worker: Worker, *, workspace_id: str, agent_key: str, conversation_id: str, reason: str
) -> DataSnapshot:
    if not worker_may_access_conversation(worker, conversation_id):
        raise SnapshotError("forbidden", "This worker was never assigned to that conversation.")
    # A conversation keeps its agent for life: a snapshot filed under another agent key
    # could never be restored, so it is refused rather than stored.
    owner_key, handoff_from, handoff_until = (
        Conversation.objects.filter(conversation_id=conversation_id)
        .values_list("agent__agent_key", "handoff_from_worker", "handoff_until")
        .first()
    ) or (None, "", None)
    if owner_key is not None and owner_key != agent_key:
        raise SnapshotError(
            "invalid_request",
            f"Conversation '{conversation_id}' belongs to agent '{owner_key}', not '{agent_key}'.",
        )
    with transaction.atomic():
        # The worker's row lock serialises its concurrent prepares for the rate check.
        Worker.objects.select_for_update().filter(pk=worker.pk).first()
        # A snapshot the server itself asked for (this worker is handing the conversation
        # off: drain, fair share) is never throttled: refusing it would hold the handoff
        # until its timeout and lose the workspace's newest turns.
        handing_off = (
            handoff_from == worker.worker_id
            and handoff_until is not None
            and handoff_until > timezone.now()
        )
        try:
            if not handing_off:
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


def _not_uploading(snapshot: DataSnapshot) -> SnapshotError:
    return SnapshotError("conflict", f"Snapshot {snapshot.pk} is {snapshot.status}, not uploading.")


def store_upload(snapshot: DataSnapshot, stream) -> tuple[str, int]:
    """Stream the archive into storage, hashing as it goes (the server's own SHA-256).

    A retried upload replaces the earlier bytes; once the snapshot is finalized or failed
    the upload is refused and the stored archive stays as it was.
    """
    if snapshot.status != DataSnapshot.UPLOADING:
        raise _not_uploading(snapshot)
    limit = settings.AGENT_FACTORY_SNAPSHOT_MAX_BYTES
    body = CappedHashingReader(stream, limit)

    previous = snapshot.archive.name if snapshot.archive else ""
    # Written under a fresh name and swapped in by a conditional update, so a concurrent
    # finalize never sees a half-written archive and a late upload changes nothing.
    storage = snapshot.archive.storage
    target = snapshot.archive.field.generate_filename(snapshot, f"snapshot-{snapshot.pk}.tar.gz")
    target = storage.get_available_name(target)
    try:
        name = storage.save(target, File(body, name="archive"))
    except StreamTooLarge:
        # Nothing was swapped in; remove what the storage wrote of it so far.
        if storage.exists(target):
            storage.delete(target)
        raise SnapshotError(
            "too_large", f"The archive is larger than the {limit}-byte snapshot limit."
        ) from None
    swapped = DataSnapshot.objects.filter(pk=snapshot.pk, status=DataSnapshot.UPLOADING).update(
        archive=name, sha256=body.hexdigest(), size_bytes=body.size
    )
    if not swapped:
        storage.delete(name)
        snapshot.refresh_from_db()
        raise _not_uploading(snapshot)
    if previous and previous != name:
        storage.delete(previous)
    snapshot.refresh_from_db()
    return snapshot.sha256, body.size


def finalize_snapshot(worker: Worker, snapshot: DataSnapshot, *, sha256: str, size_bytes: int):
    """Mark the snapshot ready if the worker's checksum and size match the server's own."""
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
    with transaction.atomic():
        failed = DataSnapshot.objects.filter(pk=snapshot.pk, status=DataSnapshot.UPLOADING).update(
            status=DataSnapshot.FAILED, error=(error or "")[:5000], completed_at=timezone.now()
        )
        if failed:
            # Nothing newer is coming from that worker: the conversation's handoff ends.
            end_handoff(snapshot.worker_id, snapshot.conversation_id)
    snapshot.refresh_from_db()
    if not failed:
        raise _not_uploading(snapshot)
    return snapshot


def reject_snapshot(worker: Worker, snapshot: DataSnapshot, error: str) -> DataSnapshot:
    """A ready snapshot whose archive a restoring worker refused (SPEC §23: a link leaving
    the data dir, past the size or member limits, unreadable): it becomes ``failed`` with the
    reason and is never offered again, so the next restore falls back to an older one.

    Only a worker that may download it may reject it. Rejecting one already failed changes
    nothing (two workers may refuse the same archive); an upload or an expired one is 409.
    """
    if not worker_may_access_conversation(worker, snapshot.conversation_id):
        raise SnapshotError(
            "forbidden", "Only a worker assigned to this conversation may reject its snapshot."
        )
    reason = (error or "refused at restore")[:5000]
    with transaction.atomic():
        snapshot = DataSnapshot.objects.select_for_update().get(pk=snapshot.pk)
        if snapshot.status == DataSnapshot.FAILED:
            return snapshot
        if snapshot.status != DataSnapshot.READY:
            raise SnapshotError(
                "conflict", f"Snapshot {snapshot.pk} is {snapshot.status}, not ready."
            )
        DataSnapshot.objects.filter(pk=snapshot.pk).update(status=DataSnapshot.FAILED, error=reason)
        record_audit(
            f"worker:{worker.worker_id}",
            "snapshot.rejected",
            snapshot,
            conversation_id=snapshot.conversation_id,
            reason=reason,
        )
    snapshot.refresh_from_db()
    return snapshot


def latest_snapshot(
    workspace_id: str, agent_key: str, conversation_id: str, before: int | None = None
) -> DataSnapshot | None:
    """The newest ready, unexpired snapshot of the triple (skipping failed newer ones); with
    ``before`` (a snapshot id of the triple), the newest one older than that snapshot."""
    now = timezone.now()
    snapshots = DataSnapshot.objects.filter(
        workspace_id=workspace_id,
        agent_key=agent_key,
        conversation_id=conversation_id,
    )
    candidates = snapshots.filter(status=DataSnapshot.READY).exclude(expires_at__lte=now)
    if before is not None:
        reference = snapshots.filter(pk=before).values_list("created_at", flat=True).first()
        if reference is None:
            return None  # not a snapshot of this triple: nothing is "older" than it
        candidates = candidates.filter(
            Q(created_at__lt=reference) | Q(created_at=reference, pk__lt=before)
        )
    return candidates.order_by("-created_at", "-id").first()


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
