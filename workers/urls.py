from django.urls import path

from workers import api_skills
from workers.api import views

app_name = "workers"

urlpatterns = [
    path("skills/manifest/", api_skills.SkillsManifestView.as_view(), name="skills-manifest"),
    path("control/", views.ControlView.as_view(), name="control"),
    path("claim/", views.ClaimView.as_view(), name="claim"),
    path("jobs/<int:message_id>/hydration/", views.HydrationView.as_view(), name="hydration"),
    path("jobs/<int:message_id>/heartbeat/", views.HeartbeatView.as_view(), name="heartbeat"),
    path("jobs/<int:message_id>/complete/", views.CompleteView.as_view(), name="complete"),
    path("jobs/<int:message_id>/fail/", views.FailView.as_view(), name="fail"),
    path("jobs/<int:message_id>/delivered/", views.DeliveredView.as_view(), name="delivered"),
    path("jobs/<int:message_id>/uploads/", views.ReplyUploadView.as_view(), name="uploads"),
    path(
        "conversations/<path:conversation_id>/messages/",
        views.AppendMessagesView.as_view(),
        name="conversation-messages",
    ),
    path("snapshots/", views.SnapshotPrepareView.as_view(), name="snapshot-prepare"),
    path("snapshots/latest/", views.SnapshotLatestView.as_view(), name="snapshot-latest"),
    path(
        "snapshots/<int:snapshot_id>/upload/",
        views.SnapshotUploadView.as_view(),
        name="snapshot-upload",
    ),
    path(
        "snapshots/<int:snapshot_id>/finalize/",
        views.SnapshotFinalizeView.as_view(),
        name="snapshot-finalize",
    ),
    path(
        "snapshots/<int:snapshot_id>/fail/", views.SnapshotFailView.as_view(), name="snapshot-fail"
    ),
    path(
        "snapshots/<int:snapshot_id>/reject/",
        views.SnapshotRejectView.as_view(),
        name="snapshot-reject",
    ),
    path(
        "snapshots/<int:snapshot_id>/download/",
        views.SnapshotDownloadView.as_view(),
        name="snapshot-download",
    ),
    path(
        "attachments/<int:attachment_id>/download/",
        views.AttachmentDownloadView.as_view(),
        name="attachment-download",
    ),
]
