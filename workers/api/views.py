"""Worker REST API (SPEC §7). Thin views: every rule lives in workers.leases & co., and their
domain errors (lease lost, snapshot refusals, history caps) carry their own status and code,
mapped once by the API's exception handler (agents.api_errors)."""

from __future__ import annotations

from django.db import DatabaseError
from django.http import FileResponse
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import AuthenticationFailed, NotFound, PermissionDenied
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import log_context
from workers import leases, lifecycle, reply_uploads, snapshots
from workers.api import serializers as s
from workers.api.auth import IsWorker, WorkerPrincipal, WorkerTokenAuthentication
from workers.claim import ClaimedJob, claim_by_token, claim_next_job
from workers.claim_wait import claim_waiting
from workers.delivery import complete_by_token, complete_with_reply, job_claimed
from workers.hydration import append_conversation_messages, build_hydration_bundle
from workers.models import DataSnapshot, MessageAttachment, Worker


def get_or_404(queryset, what: str, **lookup):
    """DRF's NotFound (not Django's Http404), so the error body keeps the §19 shape."""
    found = queryset.filter(**lookup).first()
    if found is None:
        raise NotFound(f"No such {what}.")
    return found


def iso(value):
    return value.isoformat() if value else None


class WorkerView(APIView):
    authentication_classes = [WorkerTokenAuthentication]
    permission_classes = [IsWorker]

    principal: WorkerPrincipal | None = None
    # True where the view checks the token in its own statements first (``by_token``).
    defers_token_lookup = False

    def get_authenticators(self):
        return [auth(deferred=self.defers_token_lookup) for auth in self.authentication_classes]

    @property
    def worker(self) -> Worker:
        return self.request.user.worker

    def perform_authentication(self, request):
        self.principal = request.user

    def handle_exception(self, exc):
        # Where the token's owner is looked up late (``defers_token_lookup``), an
        # unknown token still answers 401 before any other error the request has (a bad
        # body, a lost lease), as where it is looked up first.
        if self.principal is not None and not isinstance(
            exc, (AuthenticationFailed, DatabaseError)
        ):
            try:
                self.principal.worker  # noqa: B018
            except AuthenticationFailed as unknown:
                exc = unknown
        return super().handle_exception(exc)

    def by_token(self, one_statement, usual, *args, **kwargs):
        """A call that checks the token in its own statements: ``one_statement(token,
        *args, **kwargs)`` answers when it decided (a ``tokens.Landed``); otherwise the
        token's owner is looked up (401 when there is none) and ``usual(worker, *args,
        **kwargs)`` answers, as it would have alone."""
        landed = one_statement(self.principal.token, *args, **kwargs)
        if landed is None:
            return usual(self.worker, *args, **kwargs)
        self.principal.known(landed.worker_id)
        return landed.answer

    def valid(self, serializer_class, data):
        serializer = serializer_class(data=data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def base_url(self) -> str:
        return self.request.build_absolute_uri("/").rstrip("/")

    def require_assigned(self, conversation_id: str) -> None:
        """Downloads are for a worker assigned to the conversation (SPEC §7)."""
        if not snapshots.worker_may_access_conversation(self.worker, conversation_id):
            raise PermissionDenied("Only a worker assigned to this conversation may download it.")


class ControlView(WorkerView):
    @extend_schema(request=s.EmptySerializer, responses={200: dict})
    def post(self, request):
        # Polling control proves an idle worker is alive (unless it already went stale).
        return Response(lifecycle.control_state(self.worker))


def job_body(job: ClaimedJob) -> dict:
    message = job.message
    log_context.bind(  # the claim's own log lines name the job it handed out
        agent_key=message.agent_key,
        conversation_id=message.conversation.conversation_id,
        message_id=message.pk,
    )
    return {
        "message_id": message.pk,
        "conversation_id": message.conversation.conversation_id,
        "agent_key": message.agent_key,
        "lease_id": job.lease_id,
        "lease_expires_at": iso(job.lease_expires_at),
        "attempt": job.attempt,
        "payload": message.payload,
        "delivered_at": iso(message.delivered_at),
    }


class ClaimView(WorkerView):
    defers_token_lookup = True

    @extend_schema(request=s.ClaimSerializer, responses={200: dict})
    def post(self, request):
        data = self.valid(s.ClaimSerializer, request.data)
        if data.get("wait_seconds"):
            job = claim_waiting(
                self.worker,
                conversation_id=data.get("conversation_id"),
                wait_seconds=data["wait_seconds"],
            )
        else:
            job = self.by_token(
                claim_by_token, claim_next_job, conversation_id=data.get("conversation_id")
            )
        if job:
            job_claimed(job.message)
        return Response({"job": job_body(job) if job else None})


class HydrationView(WorkerView):
    @extend_schema(parameters=[s.HydrationQuerySerializer], responses={200: dict})
    def get(self, request, message_id: int):
        data = self.valid(s.HydrationQuerySerializer, request.query_params)
        message = leases.get_leased_message(self.worker, message_id, data["lease_id"])
        return Response(build_hydration_bundle(message, base_url=self.base_url()))


class HeartbeatView(WorkerView):
    defers_token_lookup = True

    @extend_schema(request=s.LeaseSerializer, responses={200: dict})
    def post(self, request, message_id: int):
        data = self.valid(s.LeaseSerializer, request.data)
        expires = self.by_token(
            leases.heartbeat_by_token, leases.heartbeat_job, message_id, data["lease_id"]
        )
        return Response({"lease_expires_at": iso(expires)})


class CompleteView(WorkerView):
    defers_token_lookup = True

    @extend_schema(request=s.CompleteSerializer, responses={200: dict})
    def post(self, request, message_id: int):
        data = self.valid(s.CompleteSerializer, request.data)
        outbox = self.by_token(
            complete_by_token,
            complete_with_reply,
            message_id,
            data["lease_id"],
            reply=data.get("reply"),
            history=data.get("history"),
            usage=data.get("usage"),
        )
        return Response({"status": "done", "outbox": outbox})


class FailView(WorkerView):
    @extend_schema(request=s.FailSerializer, responses={200: dict})
    def post(self, request, message_id: int):
        data = self.valid(s.FailSerializer, request.data)
        message = leases.fail_job(
            self.worker, message_id, data["lease_id"], data["error"], data.get("usage")
        )
        return Response({"status": message.status, "next_attempt_at": iso(message.next_retry_at)})


class DeliveredView(WorkerView):
    @extend_schema(request=s.LeaseSerializer, responses={200: dict})
    def post(self, request, message_id: int):
        data = self.valid(s.LeaseSerializer, request.data)
        delivered_at = leases.mark_delivered(self.worker, message_id, data["lease_id"])
        return Response({"delivered_at": iso(delivered_at)})


class AppendMessagesView(WorkerView):
    @extend_schema(request=s.AppendMessagesSerializer, responses={200: dict})
    def post(self, request, conversation_id: str):
        data = self.valid(s.AppendMessagesSerializer, request.data)
        appended = append_conversation_messages(
            self.worker,
            conversation_id=conversation_id,
            message_id=data["message_id"],
            lease_id=data["lease_id"],
            messages=data["messages"],
        )
        return Response({"appended": appended})


class RawBytesParser(BaseParser):
    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream


class ReplyUploadView(WorkerView):
    """A file for the job's reply (SPEC §7): raw bytes, only under the live lease."""

    parser_classes = [RawBytesParser]

    @extend_schema(
        parameters=[s.UploadQuerySerializer],
        request={"application/octet-stream": bytes},
        responses={201: dict},
    )
    def post(self, request, message_id: int):
        data = self.valid(s.UploadQuerySerializer, request.query_params)
        length = request.META.get("CONTENT_LENGTH") or ""
        upload = reply_uploads.store_reply_upload(
            self.worker,
            message_id,
            data["lease_id"],
            kind=data["kind"],
            file_name=data["filename"],
            stream=request._request,
            content_type=request.META.get("CONTENT_TYPE", ""),
            content_length=int(length) if length.isdigit() else None,
        )
        return Response(
            {"upload_id": upload.pk, "size_bytes": upload.size_bytes, "sha256": upload.sha256},
            status=status.HTTP_201_CREATED,
        )


class SnapshotPrepareView(WorkerView):
    @extend_schema(request=s.PrepareSnapshotSerializer, responses={201: dict})
    def post(self, request):
        data = self.valid(s.PrepareSnapshotSerializer, request.data)
        snapshot = snapshots.prepare_snapshot(self.worker, **data)
        upload_url = self.base_url() + reverse("workers:snapshot-upload", args=[snapshot.pk])
        return Response(
            {"snapshot_id": snapshot.pk, "upload_url": upload_url}, status=status.HTTP_201_CREATED
        )


def own_snapshot(worker: Worker, snapshot_id: int) -> DataSnapshot:
    return get_or_404(DataSnapshot.objects, "snapshot", pk=snapshot_id, worker_id=worker.worker_id)


class SnapshotUploadView(WorkerView):
    parser_classes = [RawBytesParser]

    @extend_schema(request={"application/octet-stream": bytes}, responses={200: dict})
    def put(self, request, snapshot_id: int):
        snapshot = own_snapshot(self.worker, snapshot_id)
        sha256, size = snapshots.store_upload(snapshot, request._request)
        return Response({"sha256": sha256, "size_bytes": size})


class SnapshotFinalizeView(WorkerView):
    @extend_schema(request=s.FinalizeSnapshotSerializer, responses={200: dict})
    def post(self, request, snapshot_id: int):
        data = self.valid(s.FinalizeSnapshotSerializer, request.data)
        snapshot = own_snapshot(self.worker, snapshot_id)
        snapshots.finalize_snapshot(self.worker, snapshot, **data)
        return Response({"status": "ready"})


class SnapshotFailView(WorkerView):
    @extend_schema(request=s.FailSnapshotSerializer, responses={200: dict})
    def post(self, request, snapshot_id: int):
        data = self.valid(s.FailSnapshotSerializer, request.data)
        snapshot = own_snapshot(self.worker, snapshot_id)
        snapshots.fail_snapshot(snapshot, data["error"])
        return Response({"status": "failed"})


class SnapshotRejectView(WorkerView):
    """A restoring worker refused this ready snapshot's archive (SPEC §23)."""

    @extend_schema(
        request=s.RejectSnapshotSerializer,
        responses={200: dict},
        description=(
            "Mark a ready snapshot failed because its archive was refused at restore; "
            "`latest` never offers it again. Any worker that may download it may call this; "
            "an already failed snapshot stays as it is (200); uploading or expired: 409."
        ),
    )
    def post(self, request, snapshot_id: int):
        data = self.valid(s.RejectSnapshotSerializer, request.data)
        snapshot = get_or_404(DataSnapshot.objects, "snapshot", pk=snapshot_id)
        snapshots.reject_snapshot(self.worker, snapshot, data["error"])
        return Response({"status": "failed"})


class SnapshotLatestView(WorkerView):
    @extend_schema(parameters=[s.LatestSnapshotQuerySerializer], responses={200: dict})
    def get(self, request):
        data = self.valid(s.LatestSnapshotQuerySerializer, request.query_params)
        snapshot = snapshots.latest_snapshot(**data)
        if snapshot is None:
            return Response({"snapshot": None})
        download = self.base_url() + reverse("workers:snapshot-download", args=[snapshot.pk])
        return Response(
            {
                "snapshot": {
                    "snapshot_id": snapshot.pk,
                    "sha256": snapshot.sha256,
                    "size_bytes": snapshot.size_bytes,
                    "created_at": iso(snapshot.created_at),
                    "download_url": download,
                }
            }
        )


class SnapshotDownloadView(WorkerView):
    @extend_schema(responses={200: bytes})
    def get(self, request, snapshot_id: int):
        snapshot = get_or_404(
            DataSnapshot.objects, "snapshot", pk=snapshot_id, status=DataSnapshot.READY
        )
        self.require_assigned(snapshot.conversation_id)
        return FileResponse(snapshot.archive.open("rb"), content_type="application/gzip")


class AttachmentDownloadView(WorkerView):
    @extend_schema(responses={200: bytes})
    def get(self, request, attachment_id: int):
        attachment = get_or_404(
            MessageAttachment.objects.select_related("message__conversation"),
            "attachment",
            pk=attachment_id,
            status=MessageAttachment.READY,
        )
        self.require_assigned(attachment.message.conversation.conversation_id)
        if not attachment.file:
            raise NotFound("The attachment file is not stored.")
        return FileResponse(
            attachment.file.open("rb"),
            content_type=attachment.mime_type or "application/octet-stream",
            filename=attachment.file_name or None,
        )
