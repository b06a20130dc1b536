"""Reply media (SPEC §7 ``jobs/<id>/uploads/``, §22): a worker uploads each file of its
reply while it holds the job's lease, then names it by id in the ``complete`` body.

Life of an upload: ``uploaded`` → ``attached`` (in the complete transaction) → ``sent``
(the channel's sender delivered it) → ``expired`` (the sweep deleted its file). An upload
never attached is deleted once its lease is gone (nothing can attach it any more); an
attached one that was never sent (a refused row) after ``RETENTION``.
"""

from __future__ import annotations

import datetime as dt
import os

from django.core.files.base import File
from django.db.models import F, Q
from django.utils import timezone
from django.utils.text import get_valid_filename

from agents.errors import DomainError
from workers import leases
from workers.models import Message, ReplyUpload, Worker
from workers.streams import CappedHashingReader, StreamTooLarge

MB = 1024 * 1024
# Telegram's own caps for a multipart upload: photos 10 MB, any other file 50 MB.
MAX_BYTES = {"photo": 10 * MB, **{k: 50 * MB for k in ("document", "audio", "voice", "video")}}
KINDS = tuple(MAX_BYTES)
# A reply carries at most 10 media; a few more uploads leave room for a retried one,
# and nothing more may fill the disk under one lease.
MAX_UPLOADS_PER_JOB = 20
RETENTION = dt.timedelta(days=7)
SWEEP_BATCH = 1000


class UploadError(DomainError):
    pass


def _too_large(kind: str) -> UploadError:
    return UploadError(
        f"A {kind} may be at most {MAX_BYTES[kind] // MB} MB (Telegram's limit).",
        code="too_large",
        status_code=413,
    )


def safe_file_name(name: str) -> str:
    """A plain file name (no directories): the worker chooses it."""
    name = os.path.basename((name or "").replace("\\", "/"))
    name = get_valid_filename(name) if name.strip(". ") else ""
    return name[:100]


def store_reply_upload(
    worker: Worker,
    message_id: int,
    lease_id: str,
    *,
    kind: str,
    file_name: str,
    stream,
    content_type: str = "",
    content_length: int | None = None,
) -> ReplyUpload:
    """Stream one reply file into storage for the job this worker holds."""
    if kind not in MAX_BYTES:
        raise UploadError(f"Unknown media kind '{kind}': use one of {', '.join(KINDS)}.")
    name = safe_file_name(file_name)
    if not name:
        raise UploadError("A file name is required (e.g. chart.png).")
    message = leases.get_leased_message(worker, message_id, lease_id)  # 409 lease_lost
    limit = MAX_BYTES[kind]
    if content_length is not None and content_length > limit:
        raise _too_large(kind)  # said before a byte is stored
    used = ReplyUpload.objects.filter(message=message, lease_id=lease_id).count()
    if used >= MAX_UPLOADS_PER_JOB:
        raise UploadError(
            f"At most {MAX_UPLOADS_PER_JOB} uploads per job.", code="too_large", status_code=413
        )
    body = CappedHashingReader(stream, limit)

    upload = ReplyUpload(
        message=message,
        worker_id=worker.worker_id,
        lease_id=lease_id,
        kind=kind,
        file_name=name,
        mime_type=(content_type or "")[:100],
    )
    field = upload.file
    target = field.storage.get_available_name(field.field.generate_filename(upload, name))
    try:
        stored = field.storage.save(target, File(body, name=name))
    except StreamTooLarge:
        if field.storage.exists(target):
            field.storage.delete(target)
        raise _too_large(kind) from None
    if body.size == 0:
        field.storage.delete(stored)
        raise UploadError("The file is empty; Telegram refuses empty files.")
    upload.file.name = stored
    upload.size_bytes = body.size
    upload.sha256 = body.hexdigest()
    upload.save()
    return upload


def attach_reply_media(message: Message, lease_id: str, media: list[dict]) -> None:
    """Inside the complete transaction: every item must name an upload of this job, made
    under this lease, not used yet, of the same kind. Any mismatch is a 400 and (the
    caller's transaction rolls back) nothing changes."""
    ids = [item["upload_id"] for item in media]
    if len(set(ids)) != len(ids):
        raise UploadError("Each upload may appear once in a reply's media.")
    uploads = {
        upload.pk: upload
        for upload in ReplyUpload.objects.select_for_update().filter(
            pk__in=ids, message=message, lease_id=lease_id
        )
    }
    for item in media:
        upload = uploads.get(item["upload_id"])
        if upload is None:
            raise UploadError(
                f"Upload {item['upload_id']} is not one of this job's uploads "
                "(upload it to jobs/<id>/uploads/ under this lease first)."
            )
        if upload.status != ReplyUpload.UPLOADED:
            raise UploadError(f"Upload {upload.pk} is {upload.status}; upload the file again.")
        if upload.kind != item["kind"]:
            raise UploadError(
                f"Upload {upload.pk} was uploaded as a {upload.kind}, not a {item['kind']}."
            )
    ReplyUpload.objects.filter(pk__in=ids).update(status=ReplyUpload.ATTACHED)


def mark_sent(upload_id: int) -> None:
    """The channel delivered it: the sweep may delete the file."""
    ReplyUpload.objects.filter(pk=upload_id, status=ReplyUpload.ATTACHED).update(
        status=ReplyUpload.SENT
    )


def sweep_reply_uploads(now: dt.datetime | None = None) -> dict:
    """Delete the files nobody will send (schedule, hourly): sent ones, never-attached ones
    whose lease is gone, attached ones past ``RETENTION``."""
    now = now or timezone.now()
    lease_live = Q(
        message__status=Message.PROCESSING,
        message__lease_id=F("lease_id"),
        message__lease_expires_at__gt=now,
    )
    done = (
        Q(status=ReplyUpload.SENT)
        | (Q(status=ReplyUpload.UPLOADED) & ~lease_live)
        | Q(status=ReplyUpload.ATTACHED, created_at__lte=now - RETENTION)
    )
    expired = 0
    for upload in ReplyUpload.objects.filter(done).order_by("id")[:SWEEP_BATCH]:
        # Conditional on the status read: a complete attaching it meanwhile wins.
        if not ReplyUpload.objects.filter(pk=upload.pk, status=upload.status).update(
            status=ReplyUpload.EXPIRED, file=""
        ):
            continue
        if upload.file:
            upload.file.delete(save=False)
        expired += 1
    return {"expired": expired}
